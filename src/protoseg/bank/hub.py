"""Banks as Hugging Face Hub artifacts: ``hf://owner/name[@revision]`` to read, :func:`push_bank` to publish.

A bank on the Hub is a **dataset** repository holding the bank's files (``manifest.json``,
``prototypes.npy``, ``table.parquet``, ``keys.npy``, ``keys.faiss``) and a generated dataset card
(``README.md``). Reading one (:func:`fetch_bank`, called by :func:`protoseg.bank.load_bank` for every
``--bank hf://…``) downloads it with ``huggingface_hub.snapshot_download`` into the Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``; nothing is downloaded again while the revision is unchanged, and a cached
revision is used offline) and checks every data file against the SHA-256 digests of its manifest before
anything reads it, so a corrupt download is refused, not used. The download cache is read-only to
protoseg: banks are extended only in folders of their own.

The endpoint is ``HF_ENDPOINT`` (default ``https://huggingface.co``), read at each call; the token the
usual one of ``huggingface_hub`` (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protoseg.bank.layout import DATA_FILES, MANIFEST_FILE
from protoseg.bank.storage import BankData, build_records, file_problem, read_bank_folder, verify_files
from protoseg.errors import ProtosegError

PREFIX = "hf://"

#: ``owner/name``: the Hub's repository id rules (letters, digits, ``-``, ``_``, ``.``; no ``--``/``..``).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

#: ``@revision``: a branch or tag name without ``/``, or a commit hash (letters, digits, ``-``, ``_``, ``.``;
#: no ``..``), so that it is one path segment of every Hub address it goes into.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

#: Seconds to wait for the Hub to accept a connection, and for each answer (between bytes of a download).
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


@dataclass(frozen=True)
class HubBank:
    """A bank on the Hub: dataset ``repo_id`` at ``revision`` (branch, tag or commit; ``None``: main)."""

    repo_id: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        return PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def hub_spec(value: str | Path | None) -> HubBank | None:
    """The :class:`HubBank` named by ``hf://owner/name[@revision]`` (also as a ``Path`` collapsed it to
    ``hf:/owner/name``), or ``None`` when ``value`` names a local folder.

    Raises:
        ProtosegError: an ``hf://`` address that is not ``owner/name[@revision]``.
    """
    if value is None:
        return None
    match = re.match(r"^hf:/+(.*)$", str(value))
    if match is None:
        return None
    repo_id, _, revision = match.group(1).partition("@")
    repo_id = repo_id.strip("/")
    bad_revision = bool(_) and (not _REVISION.match(revision) or ".." in revision)
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or bad_revision:
        raise ProtosegError(f"{value!r} is not a Hub bank address; write hf://owner/name or "
                            "hf://owner/name@revision (a dataset repository on the Hugging Face Hub)")
    return HubBank(repo_id, revision or None)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


@functools.cache  # once per process: replacing the factory closes the shared client
def _bounded_client() -> None:
    """Give the Hub client of this process connect and read timeouts (:data:`CONNECT_TIMEOUT`,
    :data:`READ_TIMEOUT`): a host that accepts the connection and never answers fails the call instead of
    holding it forever."""
    # imported on use (about 80 ms measured), paid only by Hub downloads and pushes
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    def bound(request: httpx2.Request) -> None:  # a call may pass timeout=None: fill each missing one
        given = request.extensions.get("timeout") or {}
        limits = {"connect": CONNECT_TIMEOUT, "read": READ_TIMEOUT, "write": READ_TIMEOUT, "pool": CONNECT_TIMEOUT}
        request.extensions["timeout"] = {k: given.get(k) or v for k, v in limits.items()}

    def factory() -> httpx2.Client:
        client = default_client_factory()
        client.timeout = httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        client.event_hooks["request"].append(bound)
        return client

    set_client_factory(factory)


def _hub_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def fetch_bank(spec: HubBank) -> Path:
    """Download (or find in the Hugging Face cache) the bank ``spec`` and verify it; returns its folder
    (a snapshot in the cache: read it, never write into it).

    Raises:
        ProtosegError: the repository or revision does not exist (or is private without a token), the Hub
            cannot be reached and the revision is not cached, or the files do not match their manifest.
    """
    # imported on use (about 80 ms measured), paid only by Hub downloads and pushes
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _bounded_client()
    where = spec.uri
    problem = None
    for force in (False, True):  # a corrupt cached copy is downloaded again once
        try:
            folder = Path(snapshot_download(spec.repo_id, repo_type="dataset", revision=spec.revision,
                                            endpoint=_endpoint(), force_download=force, etag_timeout=READ_TIMEOUT,
                                            cache_dir=os.environ.get("HF_HUB_CACHE") or None))
        except RepositoryNotFoundError:
            raise ProtosegError(f"cannot read bank {where}: there is no dataset repository {spec.repo_id} on the "
                                "Hub (or it is private: log in with `hf auth login` or set HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise ProtosegError(f"cannot read bank {where}: the dataset {spec.repo_id} has no revision "
                                f"{spec.revision!r}") from None
        except LocalEntryNotFoundError:
            raise ProtosegError(f"cannot read bank {where}: the Hub cannot be reached and this revision is not in "
                                "the local Hugging Face cache; connect once to download it (it is then used "
                                "offline)") from None
        except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as exc:
            raise ProtosegError(f"cannot download bank {where}: {_hub_error(exc)}") from None
        problem = file_problem(folder)
        if problem is None:
            return folder
    raise ProtosegError(f"bank {where} failed verification and was not used: {problem}; the published bank is "
                        "corrupt (or was damaged on the way twice): ask its publisher to push it again")


def dataset_card(bank: BankData, repo_id: str, licence: str) -> str:
    """The ``README.md`` of a bank's dataset repository: YAML front matter (licence, tags) and what the bank
    is, how it was built and how to segment with it."""
    m = bank.manifest
    summary = bank.summary()
    records = build_records(m.settings)
    recipe = next((r["preset"] for r in records if isinstance(r.get("preset"), dict)), {})
    llm = next((r["llm"] for r in records if isinstance(r.get("llm"), str)), None)
    preset = recipe.get("segment_preset")
    models = [("dense features", m.feature_encoder), ("text keys", m.text_encoder),
              ("diffusion", recipe.get("diffusion")), ("LLM", llm)]
    per_class = summary["per_class"]
    shown = list(per_class.items())[:100]
    lines = [
        "---", f"license: {licence}", "tags:", "- protoseg", "- image-segmentation", "- prototypes",
        "task_categories:", "- image-segmentation", f"pretty_name: protoseg bank {repo_id}", "---", "",
        f"# protoseg prototype bank `{repo_id}`", "",
        f"A {m.method} prototype bank of protoseg (training-free open-vocabulary semantic segmentation with "
        "visual prototypes generated offline).", "",
        "| | |", "|---|---|",
        f"| method | {m.method} |",
        *(f"| {role} | `{name}` |" for role, name in models if name),
        f"| classes | {summary['classes']} |",
        f"| prototypes | {summary['prototypes']} ({', '.join(f'{k}: {v}' for k, v in summary['levels'].items())}) |",
        f"| feature dim / dtype | {m.feature_dim} / {m.dtype} |",
        f"| bank_id | `{m.bank_id}` |", "",
        "## Use", "", "```bash",
        f'protoseg segment photo.jpg --classes "{", ".join(list(per_class)[:4])}" --bank hf://{repo_id}'
        + (f" --preset {preset}" if preset else ""), "```", "",
        "The bank is downloaded into the Hugging Face cache and every file is checked against the SHA-256 "
        "digests of `manifest.json` before use. Python: "
        f'`Segmenter.from_preset("{preset or "PRESET"}", bank="hf://{repo_id}")`.', "",
        "## Prototypes per class", "", "| class | prototypes |", "|---|---|",
        *(f"| {name} | {count} |" for name, count in shown),
        *([f"| … {len(per_class) - len(shown)} more | |"] if len(per_class) > len(shown) else []), "",
        "## Build settings", "", "```json", json.dumps(m.settings, indent=2, sort_keys=True, default=str), "```", "",
        "The prototypes derive from the models above; their licences apply.", "",
    ]
    return "\n".join(lines)


def push_bank(bank: str | Path, repo_id: str, *, private: bool = False, branch: str | None = None,
              licence: str = "other", token: str | None = None) -> dict[str, Any]:
    """Upload the bank folder ``bank`` to the Hub dataset ``repo_id`` (created when missing) in one commit,
    with a generated dataset card; data files of an earlier push that this bank lacks are deleted.

    The bank is verified first (a damaged bank is never published). Returns ``{"uri": "hf://…",
    "url": commit url, "commit": oid}``.

    Raises:
        ProtosegError: a bad repository id, a bank that is not a local folder, a damaged bank, or an error
            of the Hub (with its message).
    """
    # imported on use (about 80 ms measured), paid only by Hub downloads and pushes
    import httpx2
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RevisionNotFoundError

    spec = hub_spec(PREFIX + repo_id + (f"@{branch}" if branch else ""))
    _bounded_client()
    if hub_spec(bank) is not None:
        raise ProtosegError(f"{bank} is already on the Hub; push a local bank folder")
    folder = Path(bank)
    loaded = read_bank_folder(folder)
    verify_files(folder)
    present = [name for name in DATA_FILES if (folder / name).is_file()]
    card = dataset_card(loaded, spec.repo_id, licence)
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        api.create_repo(spec.repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch:
            api.create_branch(spec.repo_id, repo_type="dataset", branch=branch, exist_ok=True)
        try:
            existing = set(api.list_repo_files(spec.repo_id, repo_type="dataset", revision=branch))
        except (EntryNotFoundError, RevisionNotFoundError):
            existing = set()
        stale = sorted(existing & set(DATA_FILES) - set(present))
        operations = [*(CommitOperationAdd(name, str(folder / name)) for name in present),
                      CommitOperationAdd(MANIFEST_FILE, str(folder / MANIFEST_FILE)),
                      CommitOperationAdd("README.md", card.encode("utf-8")),
                      *(CommitOperationDelete(name) for name in stale)]
        info = api.create_commit(spec.repo_id, operations, repo_type="dataset", revision=branch,
                                 commit_message=f"protoseg bank {loaded.manifest.bank_id[:12]}: "
                                                f"{len(loaded.classes)} classes, {len(loaded)} prototypes")
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as exc:
        raise ProtosegError(f"cannot push {folder} to the Hub dataset {spec.repo_id}: {_hub_error(exc)}") from None
    return {"uri": spec.uri, "url": str(info.commit_url), "commit": info.oid}
