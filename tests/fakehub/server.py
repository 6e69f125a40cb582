"""A fake Hugging Face hub: the API huggingface_hub uses to list and download a repo's files.

Serves ``GET /api/models/{repo}[/revision/{rev}]`` (files with sizes, blob ids and LFS sha256),
``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (ETag, X-Repo-Commit, Range, LFS files redirect
to ``/cdn/{sha256}``, as the real hub sends them to its CDN) and ``/cdn/{sha256}``. Every
request is logged with its headers, and :class:`Faults` switches on the failures downloads
must survive or detect. Requests in absolute form (``GET http://host/path``) are served too, so
the server doubles as an HTTP proxy for the proxy test.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from support.models import TINY_R1_GGUF, TINY_R1_HF

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GATED_REPO = "r1serve-test/gated"  # answers 403 GatedRepo, like a repo whose terms are not accepted
HTML_ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
CHUNK = 64 * 1024


@cache
def _read(path: Path) -> bytes:
    return path.read_bytes()


@dataclass(frozen=True)
class HubFile:
    """A file of a fake repo; LFS files carry a sha256 like on the real hub."""

    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return _sha256(self.data)

    @property
    def blob_id(self) -> str:
        # LFS files: the git blob is the pointer file; its id is not used for verification.
        content = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {len(self.data)}\n"
        ).encode()

    def sibling(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": self.path, "size": len(self.data)}
        entry["blobId"] = self.blob_id
        if self.lfs:
            entry["lfs"] = {"sha256": self.sha256, "size": len(self.data), "pointerSize": 130}
        return entry


@cache
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hf_file(name: str, lfs: bool = False) -> HubFile:
    return HubFile(name, _read(TINY_R1_HF / name), lfs)


def default_repos() -> dict[str, list[HubFile]]:
    """Repos served: the tiny R1 model as safetensors, as GGUF files, and with pickles only;
    GGUF repos named by quantization (split, ambiguous, a catalog model's GGUF repo)."""
    readme = HubFile("README.md", b"# tiny-r1\nA test model.\n", False)
    tiny = [
        _hf_file("config.json"),
        _hf_file("generation_config.json"),
        _hf_file("model.safetensors", lfs=True),
        _hf_file("tokenizer.json", lfs=True),
        _hf_file("tokenizer_config.json"),
        readme,
        HubFile("LICENSE", b"", False),  # empty: complete before any byte arrives
        HubFile(".gitattributes", b"*.safetensors filter=lfs\n", False),
        HubFile("modeling_evil.py", b"import os\nos.system('echo pwned')\n", False),
        HubFile("training_args.bin", b"\x80\x04pickle", True),
        HubFile("optimizer.pkl", b"\x80\x04pickle", True),
    ]
    gguf = _read(TINY_R1_GGUF)
    ggufs = [
        HubFile("tiny-r1-F16.gguf", gguf, True),
        HubFile("quants/tiny-r1-Q8_0.gguf", gguf, True),
        readme,
    ]
    pickled = [_hf_file("config.json"), HubFile("pytorch_model.bin", b"\x80\x04fake", True)]
    half = len(gguf) // 2
    split = [  # a split GGUF in a folder, as bartowski and unsloth publish the largest quants
        HubFile("Q4_K_M/tiny-r1-Q4_K_M-00001-of-00002.gguf", gguf[:half], True),
        HubFile("Q4_K_M/tiny-r1-Q4_K_M-00002-of-00002.gguf", gguf[half:], True),
        HubFile("tiny-r1-Q2_K-00001-of-00003.gguf", gguf[:half], True),  # parts 2, 3 missing
        HubFile("tiny-r1-IQ4_XS.gguf", b"GGUF-iq4", True),
        HubFile("tiny-r1-Q5_K_M.gguf", b"GGUF-q5-a", True),
        HubFile("other-Q5_K_M.gguf", b"GGUF-q5-b", True),  # two files for one quantization
    ]
    # The catalog's GGUF repo of R1-Distill-Qwen-1.5B, with bartowski's file names (tiny bytes).
    distill = "DeepSeek-R1-Distill-Qwen-1.5B"
    catalog_repo = [
        HubFile(f"{distill}-Q4_K_M.gguf", gguf, True),
        HubFile(f"{distill}-Q8_0.gguf", gguf, True),
        HubFile(f"{distill}-f16.gguf", gguf, True),
        readme,
    ]
    return {
        "r1serve-test/tiny-r1": tiny,
        "r1serve-test/tiny-r1-GGUF": ggufs,
        "r1serve-test/pickled": pickled,
        "r1serve-test/split-GGUF": split,
        f"bartowski/{distill}-GGUF": catalog_repo,
    }


@dataclass
class Faults:
    """Failure switches; file faults are keyed by the file's path in its repo."""

    down: bool = False  # close every connection without answering
    ignore_range: bool = False  # answer 200 with the whole file to a Range request
    drop_after: dict[str, int] = field(default_factory=dict)  # drop the body at this offset
    drop_times: int = 1  # how many responses drop before the server behaves
    stall_after: dict[str, int] = field(default_factory=dict)  # stop sending until released
    release: threading.Event = field(default_factory=threading.Event)
    flip_byte: dict[str, int] = field(default_factory=dict)  # serve the file with a byte flipped
    truncate: dict[str, int] = field(default_factory=dict)  # serve only the first N bytes
    html_error: set[str] = field(default_factory=set)  # 200 + an HTML page ("api": listing)
    extra_siblings: list[dict[str, Any]] = field(default_factory=list)  # appended to listings
    size_override: dict[str, int] = field(default_factory=dict)  # listed size of a file
    cdn_base: str | None = None  # LFS redirects go here (another host) instead of ourselves


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    proxied: bool


class FakeHub:
    """The server, its repos, fault switches and request log."""

    def __init__(self, repos: dict[str, list[HubFile]] | None = None) -> None:
        self.repos = repos if repos is not None else default_repos()
        self.faults = Faults()
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._drops_done = 0
        self.server_errors: list[BaseException] = []  # handler bugs, not dropped clients
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._server.hub = self
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.faults.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def file(self, repo_id: str, path: str) -> HubFile:
        return next(f for f in self.repos[repo_id] if f.path == path)

    def requests_for(self, path_suffix: str, method: str = "GET") -> list[LoggedRequest]:
        """Logged requests of ``method`` whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.log if r.method == method and r.path.endswith(path_suffix)]

    def record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.log.append(entry)

    def take_drop(self) -> bool:
        with self._lock:
            if self._drops_done >= self.faults.drop_times:
                return False
            self._drops_done += 1
            return True

    def blob(self, sha256: str) -> HubFile | None:
        for files in self.repos.values():
            for hub_file in files:
                if hub_file.lfs and hub_file.sha256 == sha256:
                    return hub_file
        return None


def dead_url() -> str:
    """An http URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def running_hub(repos: dict[str, list[HubFile]] | None = None) -> Iterator[FakeHub]:
    """A started fake hub, stopped on exit."""
    hub = FakeHub(repos).start()
    try:
        yield hub
    finally:
        hub.stop()


class _Server(ThreadingHTTPServer):
    hub: FakeHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up mid-body in the fault tests; anything else is a bug in the fake.
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError | TimeoutError):
            self.hub.server_errors.append(error)


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_CDN = re.compile(r"^/cdn/([0-9a-f]{64})$")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def _handle(self, send_body: bool) -> None:
        target = self.path
        proxied = target.startswith("http://")
        if proxied:
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        path = unquote(urlsplit(target).path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.hub.record(LoggedRequest(self.command, path, headers, proxied))
        if self.hub.faults.down:
            self.close_connection = True
            return
        if match := _API.match(path):
            self._listing(match.group(1), match.group(2) or "main")
        elif match := _RESOLVE.match(path):
            self._resolve(match.group(1), match.group(2), match.group(3), send_body)
        elif match := _CDN.match(path):
            blob = self.hub.blob(match.group(1))
            if blob is None:
                self._error(404, "EntryNotFound")
            else:
                self._send_file(blob, send_body)
        else:
            self._error(404, "EntryNotFound")

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _html(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HTML_ERROR_PAGE)))
        self.end_headers()
        self.wfile.write(HTML_ERROR_PAGE)

    def _listing(self, repo_id: str, revision: str) -> None:
        if "api" in self.hub.faults.html_error:
            return self._html()
        if repo_id == GATED_REPO:
            return self._error(403, "GatedRepo")
        if repo_id not in self.hub.repos:
            return self._error(404, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound")
        siblings = [f.sibling() for f in self.hub.repos[repo_id]]
        for sibling in siblings:
            if sibling["rfilename"] in self.hub.faults.size_override:
                size = self.hub.faults.size_override[sibling["rfilename"]]
                sibling["size"] = size
                if "lfs" in sibling:
                    sibling["lfs"]["size"] = size
        siblings += self.hub.faults.extra_siblings
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": COMMIT, "siblings": siblings})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _resolve(self, repo_id: str, revision: str, path: str, send_body: bool) -> None:
        files = {f.path: f for f in self.hub.repos.get(repo_id, [])}
        if repo_id not in self.hub.repos:
            return self._error(404, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound")
        hub_file = files.get(path)
        if hub_file is None:
            return self._error(404, "EntryNotFound")
        if hub_file.lfs:  # the real hub sends LFS files to its CDN with a 302
            base = self.hub.faults.cdn_base or ""
            self.send_response(302)
            self.send_header("Location", f"{base}/cdn/{hub_file.sha256}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
            self.send_header("X-Linked-Size", str(len(hub_file.data)))
            self.send_header("ETag", f'"{hub_file.blob_id}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send_file(hub_file, send_body)

    def _body_of(self, hub_file: HubFile) -> bytes:
        faults = self.hub.faults
        data = hub_file.data
        if hub_file.path in faults.flip_byte:
            offset = faults.flip_byte[hub_file.path]
            data = data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]
        if hub_file.path in faults.truncate:
            data = data[: faults.truncate[hub_file.path]]
        return data

    def _send_file(self, hub_file: HubFile, send_body: bool) -> None:
        faults = self.hub.faults
        if hub_file.path in faults.html_error:
            return self._html()
        data = self._body_of(hub_file)
        start = 0
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and not faults.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                return self._error(416, "RangeNotSatisfiable")
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hub_file.sha256 if hub_file.lfs else hub_file.blob_id}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if send_body:
            self._stream(hub_file.path, data, start)
        return None

    def _stream(self, path: str, data: bytes, start: int) -> None:
        faults = self.hub.faults
        stop_at = len(data)
        drop = path in faults.drop_after and faults.drop_after[path] > start
        if drop and self.hub.take_drop():
            stop_at = faults.drop_after[path]
        stall = faults.stall_after.get(path)
        if stall is not None and stall > start:
            stop_at = min(stop_at, stall)
        position = start
        while position < stop_at:
            end = min(position + CHUNK, stop_at)
            self.wfile.write(data[position:end])
            position = end
        if position < len(data):
            if stall is not None and position == stall:
                faults.release.wait(timeout=60)
            self.close_connection = True  # the client sees a body shorter than announced
            self.connection.shutdown(socket.SHUT_RDWR)
