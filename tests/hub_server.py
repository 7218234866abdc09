"""A loopback stand-in for the Hugging Face hub, serving tiny repositories the way huggingface_hub 2.4 reads them.

Endpoints (what `HfApi.model_info`, `snapshot_download` and `hf_hub_download` call):
  GET  /api/models/{repo}/revision/{rev}[?blobs=True]  -> {"id", "sha", "siblings": [{rfilename, size, blobId, lfs}]}
  GET  /api/models/{repo}/tree/{rev}?recursive=...     -> [{"type": "file", "path", "size", "oid", "lfs"}]
  HEAD /{repo}/resolve/{rev}/{path}                    -> ETag, X-Repo-Commit, X-Linked-Etag, X-Linked-Size, Content-Length
  GET  /{repo}/resolve/{rev}/{path}                    -> the bytes; honours `Range: bytes=N-` with 206
Faults for tests: `cut_once` paths drop the connection halfway through their first GET; `corrupt` paths serve the
right number of wrong bytes; `fail` paths answer 500. Every request is logged in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            listing = "".join(f"{path}:{git_blob_sha1(data)}\n" for path, data in sorted(self.files.items()))
            self.commit = hashlib.sha1(listing.encode()).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def file_record(self, path: str) -> dict:
        """One file as the hub's tree endpoint describes it (the LFS oid is the sha256 of the content)."""
        data = self.files[path]
        record = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if self.is_lfs(path):
            pointer = lfs_pointer(data)
            record["oid"] = git_blob_sha1(pointer)
            record["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        return record

    def etag(self, path: str) -> str:
        record = self.file_record(path)
        return record["lfs"]["oid"] if "lfs" in record else record["oid"]


@dataclass
class HubState:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, range header)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def gets(self, path_suffix: str) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith(path_suffix)]


API_RE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)$")
RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
RANGE_RE = re.compile(r"^bytes=(\d+)-$")


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made by `serve`

    def log_message(self, *args) -> None:  # keep test output clean
        return None

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.state.lock:
            self.state.requests.append((method, path, self.headers.get("Range", "")))
        if match := API_RE.match(path):
            return self._api(match["repo"], match["kind"], match["rev"])
        if match := RESOLVE_RE.match(path):
            return self._resolve(method, match["repo"], match["rev"], match["path"])
        self._send_json({"error": "not found"}, 404)

    def _repo_at(self, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._send_json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
            return None
        if revision not in ("main", repo.commit):
            self._send_json({"error": "Invalid rev id"}, 404, {"X-Error-Code": "RevisionNotFound"})
            return None
        return repo

    def _api(self, repo_id: str, kind: str, revision: str) -> None:
        repo = self._repo_at(repo_id, revision)
        if repo is None:
            return
        records = [repo.file_record(path) for path in sorted(repo.files)]
        if kind == "tree":
            return self._send_json(records)
        siblings = [{"rfilename": r["path"], "size": r["size"], "blobId": r["oid"],
                     **({"lfs": {"sha256": r["lfs"]["oid"], "size": r["size"], "pointerSize": r["lfs"]["pointerSize"]}}
                        if "lfs" in r else {})} for r in records]
        self._send_json({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False, "siblings": siblings})

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_at(repo_id, revision)
        if repo is None:
            return
        if path not in repo.files:
            return self._send_json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound",
                                                                        "X-Repo-Commit": repo.commit})
        if path in self.state.fail:
            return self._send_json({"error": "internal error"}, 500)
        data = repo.files[path]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(path)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            headers |= {"X-Linked-Etag": f'"{repo.etag(path)}"', "X-Linked-Size": str(len(data))}
        if method == "HEAD":
            return self._send_bytes(b"", 200, headers, content_length=len(data))
        self._send_file(path, data, headers)

    def _send_file(self, path: str, data: bytes, headers: dict) -> None:
        if path in self.state.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = 0
        if (match := RANGE_RE.match(self.headers.get("Range", ""))) is not None:
            start = int(match[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        status = 206 if start else 200
        body = data[start:]
        with self.state.lock:
            cut = path in self.state.cut_once
            self.state.cut_once.discard(path)
        if cut:  # promise the whole body, send half, drop the connection: a transfer cut mid-file
            self._send_bytes(body[: len(body) // 2], status, headers, content_length=len(body))
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self._send_bytes(body, status, headers)

    def _send_json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        self._send_bytes(json.dumps(payload).encode(), status, {"Content-Type": "application/json", **(headers or {})})

    def _send_bytes(self, body: bytes, status: int, headers: dict, content_length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(state: HubState) -> tuple[ThreadingHTTPServer, str]:
    """Start the fake hub on 127.0.0.1 (a free port) in a daemon thread; returns the server and its endpoint."""
    handler = type("BoundHubHandler", (HubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
