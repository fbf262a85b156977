"""A small stand-in for the Hugging Face Hub HTTP API, so publishing can be tested offline.

`HubServer` runs a threaded `http.server` on 127.0.0.1 and answers the requests the real
`huggingface_hub` client sends when it publishes a dataset: whoami, repo creation, branches and
tags (create, list refs; a tag resolves as a revision wherever a branch does), tree / paths-info
listings, preupload (regular vs LFS), the Git LFS batch API with the basic transfer (a PUT to a
pre-signed URL, then verify), the NDJSON commit endpoint (additions, deletions, and the 412 the
Hub answers when `parentCommit` is no longer the branch head), and file downloads (`resolve`,
whole or by byte range): enough for `datasets.load_dataset` to read a repo at any revision.
Repositories, commits and LFS objects live in memory.

Every request is recorded (method, path with query, headers, body) so a test can check where
the token travelled, and every API request must carry `Authorization: Bearer <token>`;
anything else gets a 401. The server never speaks Xet: the client must be run with Xet
disabled (`huggingface_hub.constants.HF_HUB_DISABLE_XET = True`), which makes it fall back to
the LFS batch API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files of 10 MiB and more in LFS
LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".zst", ".gz", ".bin", ".safetensors")
TREE_PAGE_SIZE = 1000  # entries per tree page; 50 when the client asks for expanded entries
GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
)
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPE_FROM_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}

_API_REPO = re.compile(
    r"^/api/(?P<plural>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?P<op>tree|paths-info|preupload|commit|branch|tag|revision|refs)(?:/(?P<rest>.*))?)?$"
)
_LFS_API = re.compile(
    r"^/(?:(?P<plural>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)\.git"
    r"/info/lfs/objects/(?P<op>batch|verify)$"
)
_RESOLVE = re.compile(
    r"^/(?:(?P<plural>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
    r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_BYTE_RANGE = re.compile(r"bytes=(?P<first>\d*)-(?P<last>\d*)")
_LFS_STORAGE = re.compile(r"^/_lfs_storage/(?P<ticket>[0-9a-f]+)$")


def git_blob_sha1(content: bytes) -> str:
    """Git's object id of a blob holding `content`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str  # path and query string, as sent
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Blob:
    """A file in a commit: its bytes and whether it is stored through LFS."""

    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        """SHA-256 of the content (the LFS object id)."""
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        """The LFS pointer file git stores in place of the content."""
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {len(self.content)}\n".encode()

    @property
    def oid(self) -> str:
        """Git object id, of the pointer for LFS files as on the Hub."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    def entry(self, path: str) -> dict:
        """The JSON the tree and paths-info endpoints give for this file."""
        out = {"type": "file", "oid": self.oid, "size": len(self.content), "path": path}
        if self.lfs:
            out["lfs"] = {
                "oid": self.sha256,
                "size": len(self.content),
                "pointerSize": len(self.pointer),
            }
        return out


@dataclass
class Repo:
    """A repository: commits as full snapshots, branch heads, LFS object store."""

    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # name -> commit id; tags never move
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    def add_commit(self, branch: str, files: dict[str, Blob], message: str) -> str:
        """Record a snapshot as the new head of `branch`; return its id."""
        oid = secrets.token_hex(20)
        self.commits[oid] = files
        self.parents[oid] = self.branches.get(branch)
        self.messages[oid] = message
        self.branches[branch] = oid
        return oid

    def resolve(self, revision: str) -> str | None:
        """Commit id for a branch, tag or commit id, None when unknown."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if revision in self.commits else None

    def history(self, branch: str) -> list[str]:
        """Commit ids of `branch`, newest first."""
        out, oid = [], self.branches.get(branch)
        while oid is not None:
            out.append(oid)
            oid = self.parents[oid]
        return out


class HubError(Exception):
    """An error answer: status, message and the Hub's X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """In-memory Hub that accepts one token; use as a context manager or call start()/stop()."""

    def __init__(self, token: str, *, user: str = "tester", lfs_threshold: int = LFS_THRESHOLD):
        self.token = token
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.tree_page_size = TREE_PAGE_SIZE
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.lfs_puts: list[str] = []  # oids received through the storage PUT, in order
        self.fail_commits = 0  # answer this many coming commit requests with a 500
        self.stall_on: tuple[str, str] | None = None  # (method, path part) of requests held
        self.stall_seconds = 60.0  # how long a held request waits before it is answered
        self._unstall = threading.Event()  # set by stop(): a held request is let go
        self._tickets: dict[str, tuple[tuple[str, str], str, int]] = {}
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._unstall.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to give the client as its endpoint."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # inspection for tests --------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        """The stored repository (KeyError when it does not exist)."""
        return self.repos[(repo_type, repo_id)]

    def files(
        self, repo_id: str, revision: str = "main", repo_type: str = "dataset"
    ) -> dict[str, bytes]:
        """Path -> content of every file at `revision`."""
        repo = self.repo(repo_id, repo_type)
        with self._lock:
            snapshot = repo.commits[repo.resolve(revision)]
            return {path: blob.content for path, blob in snapshot.items()}

    def commit_count(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> int:
        """Number of commits on a branch, the repository's initial commit included."""
        with self._lock:
            return len(self.repo(repo_id, repo_type).history(revision))

    def requests_to(self, method: str, path_fragment: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path contains `path_fragment`."""
        with self._lock:
            return [r for r in self.requests if r.method == method and path_fragment in r.path]

    # request handling ----------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, bytes]:
        """Answer one request: (status, headers, body)."""
        with self._lock:
            self.requests.append(RecordedRequest(method, raw_path, headers, body))
        split = urlsplit(raw_path)
        path, query = split.path, parse_qs(split.query)
        try:
            if (m := _LFS_STORAGE.match(path)) and method == "PUT":
                return self._lfs_store(m["ticket"], body)
            self._check_auth(headers)
            if self.stall_on and method == self.stall_on[0] and self.stall_on[1] in path:
                self._unstall.wait(self.stall_seconds)  # a Hub that takes a request, then sleeps
            with self._lock:
                return self._route(method, path, query, body, headers)
        except HubError as err:
            extra = {"X-Error-Message": err.message}
            if err.code:
                extra["X-Error-Code"] = err.code
            return _json(err.status, {"error": err.message}, extra)

    def _check_auth(self, headers: dict[str, str]) -> None:
        given = headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _route(
        self, method: str, path: str, query: dict, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict, bytes]:
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami()
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body))
        if path == "/api/validate-yaml" and method == "POST":
            return _json(200, {"errors": [], "warnings": []})
        if m := _LFS_API.match(path):
            repo = self._get_repo(m["plural"] or "models", m["ns"], m["name"])
            if m["op"] == "batch" and method == "POST":
                return self._lfs_batch(repo, json.loads(body))
            if m["op"] == "verify" and method == "POST":
                return self._lfs_verify(repo, json.loads(body))
        if (m := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
            repo = self._get_repo(m["plural"] or "models", m["ns"], m["name"])
            return self._resolve(
                repo, unquote(m["rev"]), unquote(m["path"]), headers.get("range"), method == "HEAD"
            )
        if m := _API_REPO.match(path):
            repo = self._get_repo(m["plural"], m["ns"], m["name"])
            op, rest = m["op"], m["rest"]
            if op is None and method == "GET":
                return self._repo_info(repo, "main")
            if op == "revision" and method == "GET":
                return self._repo_info(repo, unquote(rest or "main"))
            if op == "refs" and method == "GET":
                return self._refs(repo)
            if op == "branch" and method == "POST" and rest:
                return self._create_branch(repo, unquote(rest), json.loads(body or b"{}"))
            if op == "tag" and method == "POST" and rest:
                return self._create_tag(repo, unquote(rest), json.loads(body or b"{}"))
            if op == "tree" and method == "GET" and rest:
                revision, _, sub = rest.partition("/")
                return self._tree(repo, unquote(revision), unquote(sub), query, path)
            if op == "paths-info" and method == "POST" and rest:
                return self._paths_info(repo, unquote(rest), parse_qs(body.decode()))
            if op == "preupload" and method == "POST" and rest:
                return self._preupload(repo, unquote(rest), json.loads(body))
            if op == "commit" and method == "POST" and rest:
                return self._commit(repo, unquote(rest), body, query)
        raise HubError(404, f"no route for {method} {path}")

    # endpoints -------------------------------------------------------------------------------

    def _whoami(self) -> tuple[int, dict, bytes]:
        return _json(
            200,
            {
                "type": "user",
                "name": self.user,
                "fullname": "Test User",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "tests", "role": "write"},
                },
            },
        )

    def _create_repo(self, payload: dict) -> tuple[int, dict, bytes]:
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"invalid repo type {repo_type!r}")
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return _json(409, {"error": f"You already created this {repo_type} repo", "url": url})
        repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private")
        repo.add_commit(
            "main", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)}, "initial commit"
        )
        self.repos[(repo_type, repo_id)] = repo
        return _json(200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def _get_repo(self, plural: str, ns: str, name: str) -> Repo:
        key = (TYPE_FROM_PLURAL[plural], f"{unquote(ns)}/{unquote(name)}")
        if key not in self.repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return self.repos[key]

    def _snapshot(self, repo: Repo, revision: str) -> tuple[str, dict[str, Blob]]:
        oid = repo.resolve(revision)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid, repo.commits[oid]

    def _repo_info(self, repo: Repo, revision: str) -> tuple[int, dict, bytes]:
        oid, snapshot = self._snapshot(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(snapshot)]
        return _json(
            200, {"id": repo.repo_id, "sha": oid, "private": repo.private, "siblings": siblings}
        )

    def _refs(self, repo: Repo) -> tuple[int, dict, bytes]:
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in repo.branches.items()
        ]
        tags = [
            {"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid}
            for name, oid in repo.tags.items()
        ]
        return _json(200, {"branches": branches, "converts": [], "tags": tags})

    def _create_branch(self, repo: Repo, branch: str, payload: dict) -> tuple[int, dict, bytes]:
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start, _ = self._snapshot(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start
        return _json(200, {})

    def _create_tag(self, repo: Repo, revision: str, payload: dict) -> tuple[int, dict, bytes]:
        tag = payload.get("tag")
        if not isinstance(tag, str) or not tag:
            raise HubError(400, "a tag name is required")
        if tag in repo.tags:
            raise HubError(409, f"Reference already exists: refs/tags/{tag}")
        oid, _ = self._snapshot(repo, revision)
        repo.tags[tag] = oid
        return _json(200, {})

    def _tree(
        self, repo: Repo, revision: str, sub: str, query: dict, path: str
    ) -> tuple[int, dict, bytes]:
        _, snapshot = self._snapshot(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        entries: dict[str, dict] = {}
        for file_path, blob in snapshot.items():
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts)) + 1):
                entry_path = prefix + "/".join(parts[:i])
                if i == len(parts):
                    entries[entry_path] = blob.entry(entry_path)
                else:
                    tree_oid = hashlib.sha1(entry_path.encode()).hexdigest()
                    entries[entry_path] = {
                        "type": "directory",
                        "oid": tree_oid,
                        "size": 0,
                        "path": entry_path,
                    }
        if prefix and not entries:
            raise HubError(404, f"{sub} does not exist on {revision}", "EntryNotFound")
        ordered = [entries[k] for k in sorted(entries)]
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        page_size = min(50, self.tree_page_size) if expand else self.tree_page_size
        start = int(query.get("cursor", ["0"])[0])
        page = ordered[start : start + page_size]
        extra = {}
        if start + page_size < len(ordered):
            params = "&".join(f"{k}={quote(v[0])}" for k, v in query.items() if k != "cursor")
            extra["Link"] = f'<{self.url}{path}?{params}&cursor={start + page_size}>; rel="next"'
        return _json(200, page, extra)

    def _paths_info(self, repo: Repo, revision: str, form: dict) -> tuple[int, dict, bytes]:
        _, snapshot = self._snapshot(repo, revision)
        out = []
        for wanted in form.get("paths", []):
            wanted = wanted.strip("/")
            if wanted in snapshot:
                out.append(snapshot[wanted].entry(wanted))
            elif any(p.startswith(wanted + "/") for p in snapshot):
                out.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(wanted.encode()).hexdigest(),
                        "path": wanted,
                    }
                )
        return _json(200, out)

    def _upload_mode(self, path: str, size: int) -> str:
        return (
            "lfs"
            if size >= self.lfs_threshold or path.lower().endswith(LFS_SUFFIXES)
            else "regular"
        )

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> tuple[int, dict, bytes]:
        _, snapshot = self._snapshot(repo, revision)
        files = []
        for item in payload["files"]:
            existing = snapshot.get(item["path"])
            remote_oid = None
            if existing is not None:
                remote_oid = existing.sha256 if existing.lfs else git_blob_sha1(existing.content)
            mode = self._upload_mode(item["path"], int(item["size"]))
            files.append(
                {"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid}
            )
        return _json(200, {"files": files, "commitOid": repo.resolve(revision)})

    def _lfs_batch(self, repo: Repo, payload: dict) -> tuple[int, dict, bytes]:
        if payload.get("operation") != "upload":
            raise HubError(422, "only uploads are supported")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(422, "only the basic transfer is supported")
        prefix = URL_PREFIX[repo.repo_type]
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            answer: dict = {"oid": oid, "size": size}
            if oid not in repo.lfs_objects:
                ticket = secrets.token_hex(16)
                self._tickets[ticket] = ((repo.repo_type, repo.repo_id), oid, size)
                answer["authenticated"] = True
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs_storage/{ticket}"},
                    "verify": {
                        "href": f"{self.url}/{prefix}{repo.repo_id}.git/info/lfs/objects/verify"
                    },
                }
            objects.append(answer)
        body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, body

    def _lfs_store(self, ticket: str, body: bytes) -> tuple[int, dict, bytes]:
        with self._lock:
            if ticket not in self._tickets:
                raise HubError(403, "unknown or used upload ticket")
            key, oid, size = self._tickets.pop(ticket)
            if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, "uploaded content does not match the announced oid and size")
            self.repos[key].lfs_objects[oid] = body
            self.lfs_puts.append(oid)
        return 200, {"ETag": f'"{oid}"'}, b""

    def _lfs_verify(self, repo: Repo, payload: dict) -> tuple[int, dict, bytes]:
        content = repo.lfs_objects.get(payload["oid"])
        if content is None or len(content) != int(payload["size"]):
            raise HubError(404, "object not found")
        return _json(200, {"success": True})

    def _commit(
        self, repo: Repo, revision: str, body: bytes, query: dict
    ) -> tuple[int, dict, bytes]:
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise HubError(500, "simulated failure")
        if "create_pr" in query:
            raise HubError(400, "pull requests are not supported here")
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line must be the commit header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and not repo.branches[revision].startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[repo.branches[revision]])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "only base64 encoded files are supported")
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                content = repo.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(
                        422, f"LFS object {value['oid']} for {value['path']} was never uploaded"
                    )
                files[value["path"]] = Blob(content, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        oid = repo.add_commit(revision, files, header.get("summary", ""))
        url = f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        answer = {
            "success": True,
            "commitOid": oid,
            "commitUrl": url,
            "hookOutput": "",
            "pullRequestUrl": None,
        }
        return _json(200, answer)

    def _resolve(
        self, repo: Repo, revision: str, path: str, byte_range: str | None, head: bool
    ) -> tuple[int, dict, bytes]:
        oid, snapshot = self._snapshot(repo, revision)
        if path not in snapshot:
            raise HubError(404, "Entry not found", "EntryNotFound")
        blob = snapshot[path]
        etag = blob.sha256 if blob.lfs else blob.oid
        status, content, size = 200, blob.content, len(blob.content)
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": oid,
            "Accept-Ranges": "bytes",
        }
        m = _BYTE_RANGE.fullmatch((byte_range or "").strip())
        if m and (m["first"] or m["last"]):
            # What HfFileSystem reads a streamed Parquet file with: "bytes=a-b", "bytes=a-", "bytes=-n".
            first, last = m["first"], m["last"]
            start = int(first) if first else max(0, size - int(last))
            end = min(int(last), size - 1) if first and last else size - 1
            if start >= size or start > end:
                raise HubError(416, f"range {byte_range} is outside the file's {size} bytes")
            status, content = 206, content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(len(content))
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(size)
        return status, headers, b"" if head else content


class _Server(ThreadingHTTPServer):
    """A client that gave up on a held request closes its socket: not worth a traceback."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Turns raw HTTP into HubServer.handle calls; the bound subclass sets `hub`."""

    protocol_version = "HTTP/1.1"
    hub: HubServer

    def _serve(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.hub.handle(self.command, self.path, headers, body)
        self.send_response(status)
        out_headers.setdefault("Content-Length", str(len(payload)))
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:
        """Stay quiet: tests inspect `HubServer.requests` instead."""


def _json(status: int, payload, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )
