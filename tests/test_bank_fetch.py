"""``protoseg bank fetch``: a FreeDA-format release served on 127.0.0.1 is downloaded (with resume), verified,
unpacked and imported once into ``$PROTOSEG_HOME``."""

import dataclasses
import io
import json
import os
import re
import socket
import tarfile
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import faiss
import numpy as np
import pytest
from conftest import assert_one_error

from protoseg.bank import PrototypeBank
from protoseg.errors import ProtosegError
from protoseg.offline import published_banks
from protoseg.offline.build import import_freeda
from protoseg.offline.published_banks import PUBLISHED_BANKS, download_url, fetch_bank, resolve_published

N, DIM, KEY_DIM = 24, 12, 768  # a small release over CLIP ViT-L/14-dim keys


@dataclasses.dataclass
class Served:
    """What the test server serves (``files``: path -> bytes), the byte counts after which it cuts its next
    responses per path (``cuts``), and what it saw (``requests``: (path, Range header); ``sent``: bytes)."""

    files: dict
    cuts: dict = dataclasses.field(default_factory=dict)
    requests: list = dataclasses.field(default_factory=list)
    sent: Counter = dataclasses.field(default_factory=Counter)


def _handler(served):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path, ranged = self.path.lstrip("/"), self.headers.get("Range")
            served.requests.append((path, ranged))
            data = served.files.get(path)
            if data is None:
                self.send_error(404)
                return
            start = int(re.fullmatch(r"bytes=(\d+)-", ranged)[1]) if ranged else 0
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206 if ranged else 200)
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            cuts = served.cuts.get(path)
            body = data[start:start + cuts.pop(0)] if cuts else data[start:]
            self.wfile.write(body)  # a cut response ends here: HTTP/1.0 closes the connection
            served.sent[path] += len(body)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def server():
    """``(served, base_url)`` of a threaded HTTP server bound to 127.0.0.1 (Range requests supported)."""
    served = Served({})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _make_release(folder, rng):
    """FreeDA's release in small: ``prototype_embeddings.tar`` (gzip, one ``.npy`` per prototype, one with a
    NaN) and ``faiss_index.zip`` (``faiss_index/knn.index``: HNSW inner product); returns the unpacked
    folder, the index path and ``{file name: bytes}``."""
    emb = folder / "prototype_embeddings"
    emb.mkdir(parents=True)
    protos = rng.normal(size=(N, DIM)).astype(np.float32)
    protos[5, 2] = np.nan
    for i, vec in enumerate(protos):
        np.save(emb / f"{i * 7919 % 1000:04d}_p{i}.npy", vec)
    keys = rng.normal(size=(N, KEY_DIM)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    index = faiss.IndexHNSWFlat(KEY_DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.add(keys)
    knn = folder / "knn.index"
    faiss.write_index(index, str(knn))
    tar_bytes, zip_bytes = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:gz") as tar:
        for path in sorted(emb.iterdir()):
            tar.add(path, arcname=path.name)
    with zipfile.ZipFile(zip_bytes, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(knn, "faiss_index/knn.index")
    return emb, knn, {"prototype_embeddings.tar": tar_bytes.getvalue(), "faiss_index.zip": zip_bytes.getvalue()}


def _zipped(data):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("faiss_index/knn.index", data)
    return buf.getvalue()


@pytest.fixture
def release(tmp_path, rng, server, monkeypatch):
    """A release served by :func:`server`, the FreeDA addresses pointing at it, ``PROTOSEG_HOME`` in
    ``tmp_path``; returns ``(served, unpacked embeddings folder, knn.index, home)``."""
    served, base = server
    emb, knn, files = _make_release(tmp_path / "release", rng)
    served.files.update(files)
    monkeypatch.setenv("PROTOSEG_FREEDA_EMBEDDINGS_URL", f"{base}/prototype_embeddings.tar")
    monkeypatch.setenv("PROTOSEG_FREEDA_INDEX_URL", f"{base}/faiss_index.zip")
    monkeypatch.setenv("PROTOSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(published_banks, "RETRY_WAIT_S", 0.0)
    return served, emb, knn, tmp_path / "home"


def _assert_same_bank(fetched, reference):
    a, b = PrototypeBank.load(fetched), PrototypeBank.load(reference)
    np.testing.assert_array_equal(a.prototypes, b.prototypes)
    np.testing.assert_array_equal(a.keys, b.keys)
    assert a.table["text"].tolist() == b.table["text"].tolist()
    assert a.table["level"].tolist() == b.table["level"].tolist()
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (fetched, reference))
    ma.pop("settings"), mb.pop("settings")  # they name the folders imported from
    assert ma == mb  # encoders, counts, dims and the SHA-256 of every data file


def test_fetch_imports_the_release_once(release, tmp_path):
    served, emb, knn, home = release
    stages = Counter()
    folder = fetch_bank("freeda-l", progress=lambda stage, done, total: stages.update([stage]))
    assert folder == home / "banks" / "freeda-l"
    _assert_same_bank(folder, import_freeda(emb, knn, tmp_path / "reference"))
    bank = PrototypeBank.load(folder)
    assert bank.manifest.feature_encoder == "facebook/dinov2-large" and bank.manifest.key_dim == KEY_DIM
    assert bank.table["level"][bank.table["text"].tolist().index(f"{5 * 7919 % 1000:04d}_p5.npy")] == "invalid"  # NaN
    assert {"download prototype_embeddings.tar", "download faiss_index.zip", "unpack prototype_embeddings.tar",
            "import"} <= set(stages)
    assert sorted(p.name for p in (home / "banks").iterdir()) == ["freeda-l"]  # downloads and work removed
    assert all(r is None for _, r in served.requests) and len(served.requests) == 2

    before = len(served.requests)
    assert fetch_bank("freeda-l") == folder and resolve_published("freeda-l") == folder
    assert len(served.requests) == before  # the second fetch downloads nothing


@pytest.mark.parametrize("cuts", [1, published_banks.RETRIES + 1], ids=["within-one-call", "across-calls"])
def test_interrupted_download_resumes_with_range(release, tmp_path, cuts):
    """The server cuts the zip's first ``cuts`` responses after 5000 bytes each: within one call the broken
    connection is retried; past the retries the call fails, keeps the bytes and the rerun continues."""
    served, emb, knn, home = release
    size = len(served.files["faiss_index.zip"])
    served.cuts["faiss_index.zip"] = [5000] * cuts
    if cuts > published_banks.RETRIES:
        with pytest.raises(ProtosegError, match="bytes received are kept and a rerun continues"):
            fetch_bank("freeda-l")
        assert not (home / "banks" / "freeda-l").exists()
    folder = fetch_bank("freeda-l")
    ranges = [r for p, r in served.requests if p == "faiss_index.zip" and r]
    assert ranges and ranges[0] == "bytes=5000-"
    assert served.sent["faiss_index.zip"] == size < 2 * size  # every byte was sent once
    _assert_same_bank(folder, import_freeda(emb, knn, tmp_path / "reference"))


def test_cli_fetch_lists_and_fetches(release, cli_run, cli_process, monkeypatch):
    served, emb, knn, home = release
    assert_one_error(cli_process("bank", "fetch", "freeda-xl"), "no published bank is called 'freeda-xl'")
    good = os.environ["PROTOSEG_FREEDA_EMBEDDINGS_URL"]
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("PROTOSEG_FREEDA_EMBEDDINGS_URL", f"http://127.0.0.1:{port}/prototype_embeddings.tar")
    assert_one_error(cli_process("bank", "fetch", "freeda-l"), f"cannot download http://127.0.0.1:{port}/", "tries")
    monkeypatch.setenv("PROTOSEG_FREEDA_EMBEDDINGS_URL", good)
    code, out, err = cli_run("bank", "fetch", "--list")
    assert code == 0 and "freeda-l" in out
    code, out, err = cli_run("bank", "fetch", "freeda-l")
    assert code == 0, err
    assert str(home / "banks" / "freeda-l") in out and "--preset freeda-l" in out


@pytest.mark.parametrize("file", ["prototype_embeddings.tar", "faiss_index.zip"])
def test_corrupt_archive_is_one_error_and_no_bank(release, cli_process, file):
    served, emb, knn, home = release
    good = served.files[file]
    served.files[file] = good[: len(good) // 2] + bytes(len(good) - len(good) // 2)  # damaged second half
    result = cli_process("bank", "fetch", "freeda-l")
    assert_one_error(result, file, "deleted, so a rerun downloads it again")
    print(next(line for line in result.stderr.splitlines() if line.startswith("error:")))
    banks = home / "banks"
    assert not (banks / "freeda-l").exists()
    assert not [p for p in (banks / ".freeda-l.download").iterdir() if file in p.name]  # the bad download went
    served.files[file] = good
    requests = sum(p == file for p, _ in served.requests)
    assert cli_process("bank", "fetch", "freeda-l").returncode == 0
    assert sum(p == file for p, _ in served.requests) == requests + 1  # downloaded again


def test_unsafe_archive_member_is_refused(release, tmp_path):
    served, *_, home = release
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = io.BytesIO(b"x" * 10)
        member = tarfile.TarInfo("../../escaped.npy")
        member.size = 10
        tar.addfile(member, data)
    served.files["prototype_embeddings.tar"] = buf.getvalue()
    with pytest.raises(ProtosegError, match="not a readable, safe tar archive"):
        fetch_bank("freeda-l")
    assert not list(tmp_path.rglob("escaped.npy")) and not (home / "banks" / "freeda-l").exists()


def test_gzip_checksum_is_verified(release):
    """The tar's end marker comes before the gzip trailer: a damaged trailer is still found."""
    served, *_, home = release
    good = served.files["prototype_embeddings.tar"]
    served.files["prototype_embeddings.tar"] = good[:-8] + bytes(8)  # CRC-32 and length of the gzip member
    with pytest.raises(ProtosegError, match="prototype_embeddings.tar is not a readable, safe tar archive"):
        fetch_bank("freeda-l")
    assert not (home / "banks" / "freeda-l").exists()


def test_release_checks(release, monkeypatch):
    served, emb, knn, home = release
    entry = PUBLISHED_BANKS["freeda-l"]
    monkeypatch.setitem(PUBLISHED_BANKS, "freeda-l", dataclasses.replace(
        entry, index=dataclasses.replace(entry.index, sha256="0" * 64)))
    with pytest.raises(ProtosegError, match="faiss_index.zip .* has SHA-256"):
        fetch_bank("freeda-l")
    monkeypatch.setitem(PUBLISHED_BANKS, "freeda-l", dataclasses.replace(entry, key_dim=512))
    with pytest.raises(ProtosegError, match="768-d keys"):
        fetch_bank("freeda-l")
    assert not (home / "banks" / "freeda-l").exists()
    work = home / "banks" / ".freeda-l.download"
    kept = sorted(p.name for p in work.iterdir())
    served.files["other/faiss_index.zip"] = _zipped(b"not a faiss index")  # another address: another download
    monkeypatch.setenv("PROTOSEG_FREEDA_INDEX_URL",
                       os.environ["PROTOSEG_FREEDA_INDEX_URL"].replace("/faiss", "/other/faiss"))
    monkeypatch.setitem(PUBLISHED_BANKS, "freeda-l", entry)
    with pytest.raises(ProtosegError, match="faiss_index.zip holds a knn.index that faiss cannot read; it was del"):
        fetch_bank("freeda-l")
    assert sorted(p.name for p in work.iterdir()) == kept  # the bad download and its unpacked index went
    with pytest.raises(ProtosegError, match="known: freeda-l"):
        fetch_bank("freeda-xl")


def test_resolve_published_names_only(release, tmp_path, monkeypatch):
    assert resolve_published("some/bank") is None and resolve_published("hf://a/b") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "freeda-l").mkdir()
    assert resolve_published("freeda-l") is None  # a local folder of that name wins


def test_download_url_refuses_other_schemes_and_http_errors(server, tmp_path):
    served, base = server
    with pytest.raises(ProtosegError, match="only http:// and https://"):
        download_url("file:///etc/hostname", tmp_path / "x")
    with pytest.raises(ProtosegError, match="HTTP 404"):
        download_url(f"{base}/missing", tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_drive_addresses_go_through_gdown(release, monkeypatch):
    import gdown

    served, *_ = release
    calls = []

    def fake_download(url, output, **kwargs):
        calls.append((url, kwargs))
        name = "faiss_index.zip" if "1FHjp" in url else "prototype_embeddings.tar"
        kwargs["progress"](len(served.files[name]), len(served.files[name]))
        with open(output, "wb") as f:
            f.write(served.files[name])
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    monkeypatch.delenv("PROTOSEG_FREEDA_EMBEDDINGS_URL")
    monkeypatch.delenv("PROTOSEG_FREEDA_INDEX_URL")
    stages = []
    assert fetch_bank("freeda-l", progress=lambda stage, done, total: stages.append(stage)).is_dir()
    assert not served.requests and "download faiss_index.zip" in stages
    assert [u for u, _ in calls] == [PUBLISHED_BANKS["freeda-l"].embeddings.url, PUBLISHED_BANKS["freeda-l"].index.url]
    assert all(k["resume"] and k["timeout"] and not k["use_cookies"] for _, k in calls)
