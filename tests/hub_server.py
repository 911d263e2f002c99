"""A small in-memory Hugging Face Hub for tests: the endpoints ``huggingface_hub`` calls to create a
repository, commit files and download a snapshot, served over HTTP on localhost.

Point the real client at it with ``HF_ENDPOINT=server.url`` (or ``endpoint=``). It implements, for every
repository type (``models`` have no URL prefix, ``datasets`` / ``spaces`` have theirs):

- ``POST /api/repos/create`` (409 when the repository exists; a new one has one commit with
  ``.gitattributes``, as the Hub makes), ``POST /api/validate-yaml``;
- ``POST /api/{type}s/{repo}/branch/{branch}``;
- ``POST /api/{type}s/{repo}/preupload/{rev}`` (every file ``regular``: contents travel base64 in the
  commit, no LFS or Xet transfer) and ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON: ``header``,
  ``file``, ``deletedFile``);
- ``GET /api/{type}s/{repo}[/revision/{rev}]`` (``sha``, ``siblings``), ``GET /api/{type}s/{repo}/tree/{rev}``
  (one page; ``oid`` is the git blob id);
- ``HEAD`` / ``GET /{type}s/{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``.

Unknown repositories, revisions and files answer 404 with the ``X-Error-Code`` the client maps to its
errors. :meth:`FakeHub.tamper` changes a stored file's bytes behind its recorded id and size, as a corrupt
storage or transfer would. Not a Hub: no authentication, no LFS, no pagination, no pull requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # oid -> path -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch -> oid
    ids: dict[str, dict[str, str]] = field(default_factory=dict)  # oid -> path -> recorded blob id
    served: dict[str, dict[str, bytes]] = field(default_factory=dict)  # tampered bytes per commit


class FakeHub:
    """The in-memory Hub and its HTTP server (``with FakeHub() as hub: ... hub.url``)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self._lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (clients then meet a refused connection, as when offline); safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------------ state
    def _commit(self, repo: _Repo, parent: str | None, files: dict[str, bytes], deleted: set[str]) -> str:
        self._counter += 1
        tree = {**(repo.commits[parent] if parent else {}), **files}
        for path in deleted:
            tree.pop(path, None)
        oid = hashlib.sha1(f"{self._counter}:{sorted(tree)}".encode()).hexdigest()
        repo.commits[oid] = tree
        repo.ids[oid] = {path: git_blob_id(data) for path, data in tree.items()}
        return oid

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision``."""
        repo = self.repos[(repo_type, repo_id)]
        return dict(repo.commits[repo.refs.get(revision, revision)])

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main",
               repo_type: str = "dataset") -> None:
        """Serve ``data`` for ``path`` at ``revision`` while still reporting the original id and size."""
        repo = self.repos[(repo_type, repo_id)]
        oid = repo.refs.get(revision, revision)
        repo.served.setdefault(oid, {})[path] = data

    def _resolve(self, kind: str, repo_id: str, revision: str) -> tuple[_Repo | None, str | None]:
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            return None, None
        oid = repo.refs.get(revision, revision if revision in repo.commits else None)
        return repo, oid


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    """The request handler class serving ``hub``."""
    return type("Handler", (_Handler,), {"hub": hub})


class _Handler(BaseHTTPRequestHandler):
    """The Hub's HTTP endpoints (module docstring) over the state of :attr:`hub`."""

    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -------------------------------------------------------------- replies
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Connection", "close")  # no kept-alive connection outlives a stopped server
        self.close_connection = True
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _missing(self, code: str, message: str, head: bool = False) -> None:
        self._send(404, json.dumps({"error": message}).encode(), {"X-Error-Code": code,
                                                                   "X-Error-Message": message}, head=head)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _parts(self) -> list[str]:
        """The request path's segments (unquoted); records the request."""
        path = urlsplit(self.path).path
        with self.hub._lock:
            self.hub.requests.append((self.command, path))
        return [unquote(p) for p in path.strip("/").split("/")]

    # -------------------------------------------------------------- reading
    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_GET(self) -> None:
        self._get(head=False)

    def _get(self, head: bool) -> None:
        parts = self._parts()
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in _TYPES:
            return self._api_get(_TYPES[parts[1]], "/".join(parts[2:4]), parts[4:])
        kind = "model"
        if parts and parts[0] in _TYPES:
            kind, parts = _TYPES[parts[0]], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve_file(kind, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._send(404, b"{}", head=head)

    def _api_get(self, kind: str, repo_id: str, rest: list[str]) -> None:
        revision = rest[1] if rest[:1] in (["revision"], ["tree"]) and len(rest) > 1 else "main"
        repo, oid = self.hub._resolve(kind, repo_id, revision)
        if repo is None:
            return self._missing("RepoNotFound", f"Repository {repo_id} not found")
        if oid is None:
            return self._missing("RevisionNotFound", f"Invalid rev id: {revision}")
        tree = repo.commits[oid]
        if rest[:1] == ["tree"]:
            return self._json(200, [{"type": "file", "path": p, "size": len(data), "oid": repo.ids[oid][p]}
                                    for p, data in sorted(tree.items())])
        self._json(200, {"id": repo_id, "sha": oid, "private": repo.private, "disabled": False,
                         "siblings": [{"rfilename": p} for p in sorted(tree)], "tags": []})

    def _resolve_file(self, kind: str, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo, oid = self.hub._resolve(kind, repo_id, revision)
        if repo is None:
            return self._missing("RepoNotFound", f"Repository {repo_id} not found", head)
        if oid is None:
            return self._missing("RevisionNotFound", f"Invalid rev id: {revision}", head)
        if name not in repo.commits[oid]:
            return self._missing("EntryNotFound", f"{name} does not exist", head)
        data = repo.served.get(oid, {}).get(name, repo.commits[oid][name])
        self._send(200, data, {"X-Repo-Commit": oid, "ETag": f'"{repo.ids[oid][name]}"'},
                   content_type="application/octet-stream", head=head)

    # -------------------------------------------------------------- writing
    def do_POST(self) -> None:
        parts = self._parts()
        body = self._body()
        if parts == ["api", "repos", "create"]:
            return self._create(json.loads(body))
        if parts == ["api", "validate-yaml"]:
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) >= 6 and parts[0] == "api" and parts[1] in _TYPES:
            return self._repo_action(_TYPES[parts[1]], "/".join(parts[2:4]), parts[4], parts[5], body)
        self._send(404, b"{}")

    def _repo_action(self, kind: str, repo_id: str, action: str, revision: str, body: bytes) -> None:
        """``POST /api/{type}s/{repo}/{action}/{revision}``: branch, preupload or commit."""
        with self.hub._lock:
            repo, oid = self.hub._resolve(kind, repo_id, revision)
            if repo is None:
                return self._missing("RepoNotFound", f"Repository {repo_id} not found")
            if action == "branch":
                return self._branch(repo, revision, json.loads(body or b"{}"))
            if oid is None:
                return self._missing("RevisionNotFound", f"Invalid rev id: {revision}")
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                   "shouldIgnore": False, "oid": None} for f in files]})
            if action == "commit":
                return self._commit(kind, repo_id, repo, revision, oid, body)
        self._send(404, b"{}")

    def _create(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type") or "model"
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        url = f"{self.hub.url}/{'' if kind == 'model' else f'{kind}s/'}{repo_id}"
        with self.hub._lock:
            if (kind, repo_id) in self.hub.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            repo = _Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
            repo.refs["main"] = self.hub._commit(repo, None, {".gitattributes": b"*.npy filter=lfs\n"}, set())
            self.hub.repos[(kind, repo_id)] = repo
        self._json(200, {"url": url})

    def _branch(self, repo: _Repo, branch: str, payload: dict[str, Any]) -> None:
        if branch in repo.refs:
            return self._json(409, {"error": f"Branch {branch} already exists"})
        start = payload.get("startingPoint") or "main"
        repo.refs[branch] = repo.refs.get(start, start)
        self._json(200, {})

    def _commit(self, kind: str, repo_id: str, repo: _Repo, revision: str, parent: str, body: bytes) -> None:
        files: dict[str, bytes] = {}
        deleted: set[str] = set()
        for line in body.splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            value = entry["value"]
            if entry["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif entry["key"] in ("deletedFile", "deletedFolder"):
                deleted.add(value["path"])
            elif entry["key"] != "header":
                return self._json(400, {"error": f"unsupported commit entry {entry['key']!r}"})
        oid = self.hub._commit(repo, parent, files, deleted)
        repo.refs[revision] = oid
        prefix = "" if kind == "model" else f"{kind}s/"
        self._json(200, {"commitUrl": f"{self.hub.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None})
