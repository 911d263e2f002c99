"""Published banks by name: ``fetch_bank("freeda-l")`` downloads, verifies, unpacks and imports a released bank
once and keeps it in protoseg's cache.

A published bank is a release in FreeDA's format (:mod:`protoseg.offline.freeda_import`): an archive of
per-prototype ``.npy`` files (tar, gzip allowed) and a zip holding the faiss index ``knn.index`` over the
prototypes' text keys. :data:`PUBLISHED_BANKS` names them; each file has a default address and an
environment variable that overrides it (a mirror, a local server).

Where things live (``$PROTOSEG_HOME``, else ``$PROTOSEG_CACHE``, else ``~/.cache/protoseg``):

- ``banks/<name>/``: the finished bank, which appears only complete (written by the importer with a
  temporary folder and a rename); its presence is what makes a second call download nothing;
- ``banks/.<name>.download/``: the downloads, named by a digest of their address (an interrupted one
  continues from the bytes it has, with an HTTP ``Range`` request), and what was unpacked from each;
  removed once the bank is written.

Google Drive addresses (FreeDA's release) are downloaded with ``gdown`` (large-file confirmation, resume);
any other HTTP(S) address with :func:`download_url`. Every archive is checked before it is used: it opens,
its members stay inside the folder they unpack to (``tarfile`` ``"data"`` filter, regular files only), it
holds ``.npy`` files and a ``knn.index`` that faiss reads with one key per file, and its size and SHA-256
match the registry where the registry knows them. A file that fails is deleted, so a rerun downloads it
again, and the error is one :class:`ProtosegError`.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import faiss

from protoseg.atomic import atomic_dir, atomic_path
from protoseg.errors import ProtosegError
from protoseg.offline.build import import_freeda
from protoseg.runs import Progress

#: Seconds to wait for a connection, and for each read from it.
TIMEOUT_S = 60.0
#: Further attempts at a download whose connection broke (each continues where the last one stopped).
RETRIES = 3
#: Seconds waited before the n-th further attempt: ``n * RETRY_WAIT_S``.
RETRY_WAIT_S = 1.0
_CHUNK = 1 << 20
_DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})

#: ``progress(bytes_done, bytes_total)`` of one download or unpack (``bytes_total`` ``None`` when unknown).
ProgressBytes = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: saved as ``file``, fetched from ``$env`` or else ``url``; ``size`` (bytes) and
    ``sha256`` (hex) are checked when known."""

    file: str
    url: str
    env: str
    size: int | None = None
    sha256: str | None = None

    @property
    def address(self) -> str:
        """The address to download from: the environment variable when set, else the default."""
        return os.environ.get(self.env) or self.url


@dataclass(frozen=True)
class PublishedBank:
    """A bank published in FreeDA's release format.

    ``embeddings`` is a tar archive of ``count`` files ``*.npy`` (one prototype ``[D]`` each); ``index`` a zip
    holding ``index_member`` (a faiss index of ``count`` keys ``[key_dim]``, id ``j`` = ``j``-th file in
    sorted order). The bank is imported with :func:`import_freeda` as made by ``feature_encoder`` /
    ``text_encoder`` and is segmented with the preset ``preset``.
    """

    name: str
    description: str
    preset: str
    homepage: str
    embeddings: ReleaseFile
    index: ReleaseFile
    feature_encoder: str
    text_encoder: str
    key_dim: int
    index_member: str = "knn.index"


PUBLISHED_BANKS: dict[str, PublishedBank] = {
    "freeda-l": PublishedBank(
        name="freeda-l",
        description="FreeDA's released bank: DINOv2 ViT-L/14 prototypes, CLIP ViT-L/14 keys (COCO Captions)",
        preset="freeda-l",
        homepage="https://github.com/aimagelab/freeda",
        embeddings=ReleaseFile("prototype_embeddings.tar",
                               "https://drive.google.com/file/d/1U4d0exJuq29b0rLR6iOT20ErW3DAmgw0/view?usp=sharing",
                               "PROTOSEG_FREEDA_EMBEDDINGS_URL"),
        index=ReleaseFile("faiss_index.zip",
                          "https://drive.google.com/file/d/1FHjpM0aqPf9OjiuG_341EMlEuq6hsh6L/view?usp=sharing",
                          "PROTOSEG_FREEDA_INDEX_URL"),
        feature_encoder="facebook/dinov2-large",
        text_encoder="openai/clip-vit-large-patch14",
        key_dim=768,
    ),
}


def protoseg_home() -> Path:
    """protoseg's cache folder: ``$PROTOSEG_HOME``, else ``$PROTOSEG_CACHE``, else ``~/.cache/protoseg``."""
    home = os.environ.get("PROTOSEG_HOME") or os.environ.get("PROTOSEG_CACHE")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "protoseg"


def published_bank(name: str) -> PublishedBank:
    """The registry entry ``name``.

    Raises:
        ProtosegError: no published bank has that name.
    """
    try:
        return PUBLISHED_BANKS[name]
    except KeyError:
        raise ProtosegError(f"no published bank is called {name!r}; known: {', '.join(PUBLISHED_BANKS)}") from None


def bank_folder(name: str, home: str | Path | None = None) -> Path:
    """Where the published bank ``name`` is kept: ``<home>/banks/<name>``."""
    return Path(home or protoseg_home()).expanduser() / "banks" / published_bank(name).name


def is_fetched(name: str, home: str | Path | None = None) -> bool:
    """Whether the published bank ``name`` is already in the cache (nothing to download)."""
    return (bank_folder(name, home) / "manifest.json").is_file()


def resolve_published(source: str | Path, home: str | Path | None = None,
                      progress: Progress | None = None) -> Path | None:
    """The cached folder of the published bank named ``source`` (fetched first when absent), or ``None`` when
    ``source`` is not a published bank's name — or names an existing file or folder, which always wins."""
    name = str(source)
    if name not in PUBLISHED_BANKS or Path(name).exists():
        return None
    return fetch_bank(name, home=home, progress=progress)


def fetch_bank(name: str, *, home: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Download, verify, unpack and import the published bank ``name`` once; returns its folder.

    ``progress(stage, done, total)`` reports ``"download <file>"`` (bytes; ``total`` 0 when unknown),
    ``"unpack <file>"`` (archive bytes read) and ``"import"`` (work items). A second call returns the
    folder at once; an interrupted call continues where it stopped.

    Raises:
        ProtosegError: unknown name, a download that fails (address, HTTP status, network), or an archive
            that is corrupt, unsafe or not what the release should hold (that download is deleted).
    """
    entry = published_bank(name)
    out = bank_folder(name, home)
    if is_fetched(name, home):
        return out
    if out.exists():
        raise ProtosegError(f"{out} exists but is not a complete bank; protoseg keeps published banks there: "
                            "move it away and fetch again")
    work = out.with_name(f".{out.name}.download")
    work.mkdir(parents=True, exist_ok=True)
    archive = _downloaded(entry.embeddings, work, progress)
    embeddings = _unpacked_embeddings(archive, archive.with_name(f"{archive.name}.unpacked"), progress)
    zipped = _downloaded(entry.index, work, progress)
    index_path = zipped.with_name(f"{zipped.name}.{entry.index_member}")
    _check_release(entry, embeddings, *_unpacked_index(zipped, entry.index_member, index_path))
    import_freeda(embeddings, index_path, out, feature_encoder=entry.feature_encoder,
                  text_encoder=entry.text_encoder, progress=_stage(progress, "import", "shards"))
    shutil.rmtree(work, ignore_errors=True)
    return out


def _stage(progress: Progress | None, stage: str, only: str | None = None) -> Callable[..., None] | None:
    """``progress`` as a byte counter ``report(done, total)`` of ``stage``, or (with ``only``) as a
    :data:`Progress` that passes on the reports of its stage ``only`` as ``stage``."""
    if progress is None:
        return None
    if only is None:
        return lambda done, total: progress(stage, done, total or 0)
    return lambda inner, done, total: progress(stage, done, total) if inner == only else None


# ---------------------------------------------------------------------------------------------- download
def _downloaded(spec: ReleaseFile, work: Path, progress: Progress | None) -> Path:
    """The verified download of ``spec`` in ``work`` (downloaded, or continued, when not there yet). Its name
    carries a digest of the address, so another address is another download."""
    url = spec.address
    dest = work / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{spec.file}"
    if not dest.is_file():
        report = _stage(progress, f"download {spec.file}")
        host = urllib.parse.urlsplit(url).hostname or ""
        (_download_drive if host in _DRIVE_HOSTS else download_url)(url, dest, report)
    problem = _file_problem(dest, spec)
    if problem:
        dest.unlink(missing_ok=True)
        raise ProtosegError(f"the download of {spec.file} from {url} {problem}; it was deleted, so a rerun "
                            "downloads it again")
    return dest


def _file_problem(path: Path, spec: ReleaseFile) -> str | None:
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return f"has {size} bytes, the release has {spec.size}"
    if spec.sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != spec.sha256.lower():
            return f"has SHA-256 {digest.hexdigest()}, the release has {spec.sha256}"
    return None


def download_url(url: str, dest: str | Path, progress: ProgressBytes | None = None) -> Path:
    """Download ``url`` (HTTP or HTTPS) to ``dest``, which appears only once complete.

    The bytes received so far are kept in ``.<dest name>.part``; a broken connection is retried
    :data:`RETRIES` times and every try, in this call or a later one, asks only for the missing bytes
    (``Range``). ``progress(done, total)`` counts bytes (``total`` ``None`` when the server does not say).

    Raises:
        ProtosegError: an address that is not HTTP(S), an HTTP error status, or a connection that kept
            breaking (the partial file is kept: rerunning continues from it).
    """
    dest = Path(dest)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ProtosegError(f"cannot download {url!r}: only http:// and https:// addresses are supported")
    part = dest.with_name(f".{dest.name}.part")
    problem: object = "no answer"
    for attempt in range(RETRIES + 1):
        if attempt:
            time.sleep(attempt * RETRY_WAIT_S)
        try:
            if _download_once(url, part, progress):
                os.replace(part, dest)
                return dest
            problem = ConnectionError("the connection closed before the end of the file")
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # the partial file is not a prefix of this file
                part.unlink()
                problem = exc
                continue
            raise ProtosegError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, OSError):
                raise ProtosegError(f"cannot download {url}: {exc.reason}") from None
            problem = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    kept = part.stat().st_size if part.exists() else 0
    then = (f"the {kept} bytes received are kept and a rerun continues from them" if kept else
            "check the address and the network")
    raise ProtosegError(f"cannot download {url}: {problem} (after {RETRIES + 1} tries); {then}")


def _download_once(url: str, part: Path, progress: ProgressBytes | None) -> bool:
    """One request for the bytes of ``url`` that ``part`` lacks, appended to it; whether it is complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "protoseg", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        if have and response.status == 206:
            start, _, size = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
            if start.partition("-")[0] != str(have):
                raise http.client.HTTPException(f"the server sent bytes {start}, not from {have}")
            total = int(size) if size.isdigit() else None
        else:  # the whole file (nothing was kept, or the server ignores ranges)
            have = 0
        with open(part, "ab" if have else "wb") as f:
            done = have
            for block in iter(lambda: response.read(_CHUNK), b""):
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    return total is None or done == total


def _download_drive(url: str, dest: Path, progress: ProgressBytes | None) -> None:
    """Download a Google Drive file with gdown (its large-file confirmation page, resume, retries)."""
    import gdown  # a measured import-time cost (~0.3 s: requests, bs4); only Drive downloads need it
    import requests

    try:
        gdown.download(url, str(dest), quiet=True, use_cookies=False, resume=True, timeout=TIMEOUT_S,
                       retries=RETRIES, progress=progress)
    except (gdown.exceptions.DownloadError, requests.RequestException) as exc:
        raise ProtosegError(f"cannot download {url}: {' '.join(str(exc).split())[:300]}; a rerun continues "
                            "from the bytes received") from None


# ---------------------------------------------------------------------------------------------- unpack
class _CountingReader:
    """A read-only file that reports how many bytes were read from it."""

    def __init__(self, f: BinaryIO, report: ProgressBytes | None, total: int) -> None:
        self.f, self.report, self.total, self.done = f, report, total, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.done += len(data)
        if self.report:
            self.report(self.done, self.total)
        return data


def _unpacked_embeddings(archive: Path, target: Path, progress: Progress | None) -> Path:
    """Unpack the tar ``archive`` into ``target`` (once) and return the folder of its ``.npy`` files.

    Raises:
        ProtosegError: the archive is corrupt, has a member that is not a plain file or folder or would land
            outside ``target``, or holds no ``.npy`` files (``archive`` is deleted).
    """
    if not hasattr(tarfile, "data_filter"):
        raise ProtosegError("unpacking a release safely needs Python >= 3.11.4 (tarfile's data filter)")
    if not target.is_dir():
        try:
            with atomic_dir(target) as tmp:
                _extract_tar(archive, tmp, _stage(progress, f"unpack {_release_name(archive)}"))
        except (tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile) as exc:
            archive.unlink(missing_ok=True)
            raise ProtosegError(f"{_release_name(archive)} is not a readable, safe tar archive ({exc}); it was "
                                "deleted, so a rerun downloads it again") from None
    folder = _npy_folder(target)
    if folder is None:
        archive.unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        raise ProtosegError(f"{_release_name(archive)} holds no folder of prototype .npy files; it was deleted, "
                            "so a rerun downloads it again (check the address)")
    return folder


def _extract_tar(archive: Path, folder: Path, report: ProgressBytes | None) -> None:
    """Extract the tar ``archive`` (gzip, bzip2, xz or none) into ``folder``: plain files and folders only,
    each inside ``folder`` (``"data"`` filter); a gzip archive is read to its end, so its CRC is checked.

    Raises:
        tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile: a corrupt or unsafe archive.
    """
    with open(archive, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        counted = _CountingReader(raw, report, archive.stat().st_size)
        source = gzip.GzipFile(fileobj=counted, mode="rb") if gz else counted
        with tarfile.open(fileobj=source, mode="r|" if gz else "r|*") as tar:
            for member in tar:
                if not (member.isfile() or member.isdir()):
                    raise tarfile.FilterError(f"{member.name!r} is not a plain file or folder")
                tar.extract(member, folder, filter="data")
        while gz and source.read(_CHUNK):  # the tar's end marker comes before the gzip trailer
            pass


def _npy_folder(root: Path, depth: int = 3) -> Path | None:
    """``root`` when all its entries are ``.npy`` files, else the same test in its only subfolder."""
    entries = list(root.iterdir())
    if entries and all(p.suffix == ".npy" and p.is_file() for p in entries):
        return root
    if depth and len(entries) == 1 and entries[0].is_dir():
        return _npy_folder(entries[0], depth - 1)
    return None


def _unpacked_index(archive: Path, member: str, target: Path) -> tuple[int, int]:
    """Copy ``member`` (matched by its base name) out of the zip ``archive`` to ``target`` (once) and read it
    with faiss; returns the index's ``(key dim, key count)``.

    Raises:
        ProtosegError: the archive is corrupt, holds no ``member`` or one faiss cannot read (``archive`` is
            deleted).
    """
    problem = None
    if not target.is_file():
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member]
                if len(names) != 1:
                    raise zipfile.BadZipFile(f"it holds {len(names)} files named {member}, expected one")
                with zf.open(names[0]) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)  # the zip checks the member's CRC as it is read
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            problem = f"is not a readable zip archive holding {member} ({exc})"
    if problem is None:
        try:
            index = faiss.read_index(str(target))
            return index.d, index.ntotal
        except RuntimeError:
            problem = f"holds a {member} that faiss cannot read"
    archive.unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    raise ProtosegError(f"{_release_name(archive)} {problem}; it was deleted, so a rerun downloads it again")


def _release_name(download: Path) -> str:
    return download.name.partition("-")[2] or download.name


def _check_release(entry: PublishedBank, embeddings: Path, key_dim: int, keys: int) -> None:
    """The index holds ``entry.key_dim``-d keys (``key_dim``), one per ``.npy`` file of ``embeddings``.

    Raises:
        ProtosegError: otherwise, naming both archives (they may come from different releases).
    """
    count = sum(1 for _ in embeddings.iterdir())
    if key_dim != entry.key_dim:
        raise ProtosegError(f"{entry.index.file}: the index holds {key_dim}-d keys; {entry.name} has "
                            f"{entry.key_dim}-d keys ({entry.text_encoder}): check the address")
    if keys != count:
        raise ProtosegError(f"{entry.index.file} indexes {keys} keys but {entry.embeddings.file} holds "
                            f"{count} prototypes; both must come from the same release: check the addresses")
