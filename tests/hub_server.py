"""A loopback stand-in for the Hugging Face Hub: just the endpoints the real huggingface_hub client calls to
download a file (HEAD/GET .../resolve/..., with Range) and to publish a folder (create repo, preupload, commit).

The Hub is unreachable from CI, so the tests point HF_ENDPOINT at this server and use the real client. The server
counts the body bytes it sends, can serve files of any size without holding them (GeneratedFile), and can send a
file slowly (Trickle).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

CHUNK = 1 << 16


@dataclass(frozen=True)
class GeneratedFile:
    """A file of `size` bytes that starts with `prefix` and is zeros after it, made as it is sent."""

    prefix: bytes
    size: int

    def __len__(self) -> int:
        return self.size

    def sha256(self) -> str:
        return hashlib.sha256(self.prefix + str(self.size).encode()).hexdigest()

    def chunks(self, start: int, end: int):
        """Bytes [start, end), CHUNK at a time."""
        while start < end:
            stop = min(end, start + CHUNK)
            head = self.prefix[start:stop]
            yield head + bytes(stop - start - len(head))
            start = stop


@dataclass
class Trickle:
    """Send a file `chunk` bytes at a time with `pause` seconds between chunks; hold the last chunk until `gate`
    is set (when given), so a test can act while the download is certainly in flight."""

    chunk: int = 1024
    pause: float = 0.05
    gate: threading.Event | None = None


class FakeHub:
    def __init__(self, token: str | None = None):
        self.repos: dict[str, dict] = {}  # repo_id -> {"branches": {name: sha}, "commits": {sha: {path: bytes}}}
        self.token = token  # writes must carry "Authorization: Bearer <token>" when set
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of every ranged GET
        self.sent = Counter()  # (method, path) -> body bytes sent
        self.downloading = Counter()  # path -> whole-file bodies (not ranged reads) being sent right now
        self.trickle: dict[tuple[str, str], Trickle] = {}  # (repo_id, filename) -> how to send it slowly
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def commit(self, repo_id: str, files: dict[str, bytes | GeneratedFile], branch: str = "main") -> str:
        """Add a commit holding exactly `files` (the parent's files, updated) on `branch`; returns its sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, {"branches": {}, "commits": {}})
            parent = repo["commits"].get(repo["branches"].get(branch, ""), {})
            tree = {**parent, **files}
            sha = hashlib.sha1(json.dumps([repo_id, branch, len(repo["commits"]),
                                           sorted((k, sha256(v)) for k, v in tree.items())]
                                          ).encode()).hexdigest()
            repo["commits"][sha] = tree
            repo["branches"][branch] = sha
            return sha

    def sent_to(self, repo_id: str, filename: str) -> int:
        """Body bytes sent in answer to GETs of repo_id's `filename` (at any revision)."""
        return sum(n for (method, path), n in self.sent.items() if method == "GET" and is_file(path, repo_id, filename))

    def full_gets(self, repo_id: str, filename: str) -> int:
        """GETs of repo_id's `filename` without a Range header: whole-file downloads."""
        gets = sum(1 for method, path in self.requests if method == "GET" and is_file(path, repo_id, filename))
        return gets - sum(1 for path, _ in self.ranges if is_file(path, repo_id, filename))

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["branches"].get(revision, revision)]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)) if "Content-Length" not in (headers or {})
                                 else headers["Content-Length"])
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                    self._count(len(body))

            def _count(self, n: int):
                with hub.lock:
                    hub.sent[(self.command, self.path)] += n

            def _send_file(self, content, start: int, end: int, trickle: Trickle | None):
                """Bytes [start, end) of a file, counted as they go; slowly when asked to."""
                pieces = content.chunks(start, end) if isinstance(content, GeneratedFile) else \
                    (content[i : i + CHUNK] for i in range(start, end, CHUNK))
                if trickle is not None:
                    body = b"".join(pieces)
                    pieces = [body[i : i + trickle.chunk] for i in range(0, len(body), trickle.chunk)]
                whole = start == 0 and end == len(content) and "Range" not in self.headers
                with hub.lock:
                    hub.downloading[self.path] += whole
                try:
                    for i, piece in enumerate(pieces):
                        if trickle is not None and i:
                            time.sleep(trickle.pause)
                            if i == len(pieces) - 1 and trickle.gate is not None:
                                trickle.gate.wait(60)
                        self.wfile.write(piece)
                        self._count(len(piece))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what it got is counted
                finally:
                    with hub.lock:
                        hub.downloading[self.path] -= whole

            def _error(self, status: int, code: str, message: str, head: bool = False):
                body = json.dumps({"error": message}).encode()
                self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                          "Content-Type": "application/json"}, head)

            def _json(self, payload, status: int = 200):
                self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _authorized(self) -> bool:
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                    return False
                return True

            def _resolve(self, head: bool):
                # /{owner}/{name}/resolve/{revision}/{path}
                parts = unquote(urlparse(self.path).path).strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "EntryNotFound", "not a resolve path", head)
                repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
                sha = repo["branches"].get(revision, revision if revision in repo["commits"] else None)
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Revision {revision} not found", head)
                content = repo["commits"][sha].get(filename)
                if content is None:
                    return self._error(404, "EntryNotFound", f"{filename} not found in {repo_id}", head)
                headers = {"X-Repo-Commit": sha, "ETag": f'"{sha256(content)}"',
                           "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
                status, start, end = 200, 0, len(content)
                if not head and (ranged := self.headers.get("Range", "")).startswith("bytes="):
                    with hub.lock:
                        hub.ranges.append((self.path, ranged))
                    first, _, last = ranged[6:].partition("-")
                    status, start = 206, int(first or 0)
                    end = min(len(content), int(last) + 1 if last else len(content))
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(content)}"
                headers["Content-Length"] = str(len(content) if head else end - start)
                self._send(status, b"", headers, head=True)
                if not head:
                    trickle = hub.trickle.get((repo_id, filename)) if status == 200 else None
                    self._send_file(content, start, end, trickle)

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path))
                self._resolve(head=True)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._resolve(head=False)

            def do_POST(self):
                hub.requests.append(("POST", self.path))
                path = urlparse(self.path).path
                body = self._body()
                if path == "/api/validate-yaml":
                    return self._json({})
                if not self._authorized():
                    return None
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
                        else payload["name"]
                    exists = repo_id in hub.repos
                    if not exists:
                        hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
                    return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id}, 409 if exists else 200)
                parts = unquote(path).strip("/").split("/")  # api models owner name verb revision
                if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                    repo_id, verb, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                    if repo_id not in hub.repos:
                        return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    if verb == "preupload":
                        files = json.loads(body)["files"]
                        return self._json({"files": [{"path": f["path"], "uploadMode": "regular",
                                                      "shouldIgnore": False, "oid": None} for f in files]})
                    if verb == "branch":
                        repo = hub.repos[repo_id]
                        repo["branches"].setdefault(revision, repo["branches"]["main"])
                        return self._json({})
                    if verb == "commit":
                        files = {}
                        for line in body.splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        sha = hub.commit(repo_id, files, branch=revision)
                        return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                                           "pullRequestUrl": None})
                return self._error(404, "EntryNotFound", f"no endpoint {path}")

        return Handler


def sha256(content: bytes | GeneratedFile) -> str:
    return content.sha256() if isinstance(content, GeneratedFile) else hashlib.sha256(content).hexdigest()


def is_file(path: str, repo_id: str, filename: str) -> bool:
    """Whether a request path is /{repo_id}/resolve/{revision}/{filename}."""
    parts = unquote(urlparse(path).path).strip("/").split("/")
    return "/".join(parts[:2]) == repo_id and parts[2:3] == ["resolve"] and "/".join(parts[4:]) == filename
