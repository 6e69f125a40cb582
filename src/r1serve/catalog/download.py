"""Download one listed file: resume with Range, verify size and hash, then move into place.

Bytes go to ``.r1serve/partial/<hash>.part`` next to the model, which survives a killed run:
the next run asks for the rest with ``Range: bytes=N-``. A server that ignores the range (200
instead of 206) makes us start the file again from zero, never append. A file is complete only
when its size and its hash (sha256 for LFS files, the git blob sha1 otherwise) match the hub's
listing; a mismatch, an HTML error page or a truncated body removes the partial file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx2

from r1serve.catalog.hub import RemoteFile, open_stream
from r1serve.errors import DownloadError

CHUNK_BYTES = 1 << 20
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransferProgress(Protocol):
    """Where download progress goes (rich bars in the CLI, nothing in library use)."""

    def start_file(self, path: str, total: int, done: int) -> None:
        """A transfer of ``path`` begins (again) with ``done`` of ``total`` bytes on disk."""

    def advance(self, path: str, nbytes: int) -> None:
        """``nbytes`` more of ``path`` arrived."""

    def finish_file(self, path: str) -> None:
        """``path`` is verified and in place."""

    def note(self, message: str) -> None:
        """Something worth a line: a retry, a restart, a mirror skipped."""


class NoProgress:
    """Progress sink that shows nothing."""

    def start_file(self, path: str, total: int, done: int) -> None:
        """Ignore."""

    def advance(self, path: str, nbytes: int) -> None:
        """Ignore."""

    def finish_file(self, path: str) -> None:
        """Ignore."""

    def note(self, message: str) -> None:
        """Ignore."""


@dataclass(frozen=True, slots=True)
class FileJob:
    """A listed file, where it will live, and where its bytes collect until verified."""

    remote: RemoteFile
    destination: Path
    partial: Path


class _Retry(Exception):
    """Transient failure: try the same endpoint again (resuming)."""


class _NextEndpoint(Exception):
    """This endpoint cannot serve the file: try the next one."""


class _Corrupt(Exception):
    """The bytes are wrong: remove the partial file and give up."""


def _host(url: str) -> str:
    return urlsplit(url).netloc


def _partial_size(job: FileJob) -> int:
    try:
        size = job.partial.stat().st_size
    except FileNotFoundError:
        return 0
    if size > job.remote.size:  # cannot be a prefix of the listed file
        job.partial.unlink()
        return 0
    return size


def _check_response(job: FileJob, response: httpx2.Response, offset: int) -> None:
    content_type = response.headers.get("Content-Type", "").lower()
    if content_type.startswith("text/html") and not job.remote.path.lower().endswith(".html"):
        raise _Corrupt("the server sent an HTML page instead of the file")
    announced = response.headers.get("Content-Length")
    expected = job.remote.size - offset
    if announced is not None and announced.isdigit() and int(announced) != expected:
        raise _Corrupt(f"the server announces {announced} bytes where the listing needs {expected}")


def _write_body(
    job: FileJob, response: httpx2.Response, offset: int, progress: TransferProgress
) -> None:
    job.partial.parent.mkdir(parents=True, exist_ok=True)
    progress.start_file(job.remote.path, job.remote.size, offset)
    written = offset
    try:
        # "ab" only when the server honoured our range; otherwise truncate and start over.
        with job.partial.open("ab" if offset else "wb") as handle:
            # Unbuffered: every byte received is on disk before a dropped connection surfaces.
            for chunk in response.iter_bytes():
                written += len(chunk)
                if written > job.remote.size:
                    raise _Corrupt(f"the server sent more than the listed {job.remote.size} bytes")
                handle.write(chunk)
                progress.advance(job.remote.path, len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        job.partial.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadError(
                f"disk full while writing {job.remote.path}; the partial file was removed"
            ) from exc
        raise DownloadError(f"cannot write {job.partial}: {exc.strerror or exc}") from exc
    if written < job.remote.size:
        raise _Corrupt(f"the body ended after {written} of {job.remote.size} bytes")


def _transfer(
    job: FileJob, url: str, headers: Mapping[str, str], progress: TransferProgress
) -> None:
    offset = _partial_size(job)
    if offset == job.remote.size:
        job.partial.parent.mkdir(parents=True, exist_ok=True)
        job.partial.touch()  # an empty file is complete before any request
        return
    # identity: byte offsets must refer to the file itself, not to a compressed stream.
    request_headers = {**headers, "Accept-Encoding": "identity"}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    try:
        with open_stream(url, request_headers) as response:
            status = response.status_code
            if status == 416:
                job.partial.unlink(missing_ok=True)
                raise _Retry("the server refused the resume range")
            if status in RETRYABLE_STATUS:
                raise _Retry(f"HTTP {status}")
            if status not in (200, 206):
                raise _NextEndpoint(f"HTTP {status}")
            if status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != offset:
                    job.partial.unlink(missing_ok=True)
                    raise _Retry("the server answered a different range than asked")
            else:
                if offset:
                    progress.note(f"{_host(url)} ignored the resume range: restarting from 0")
                offset = 0
            _check_response(job, response, offset)
            _write_body(job, response, offset, progress)
    except httpx2.TransportError as exc:
        raise _Retry(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


def _digest(path: Path, remote: RemoteFile) -> tuple[str, str | None, str]:
    """(hash name, expected, actual) for ``path``."""
    expected: str | None
    if remote.sha256 is not None:
        hasher, expected, name = hashlib.sha256(), remote.sha256, "sha256"
    else:
        # The hub's blob id of a non-LFS file is git's: sha1 over "blob <size>\0" + content.
        hasher, expected, name = hashlib.sha1(usedforsecurity=False), remote.blob_id, "git sha1"
        hasher.update(b"blob %d\0" % remote.size)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            hasher.update(block)
    return name, expected, hasher.hexdigest()


def _verify_and_place(job: FileJob) -> None:
    size = job.partial.stat().st_size
    if size != job.remote.size:
        job.partial.unlink()
        raise DownloadError(
            f"{job.remote.path}: {size} bytes, the listing says {job.remote.size}; "
            "the partial file was removed"
        )
    name, expected, actual = _digest(job.partial, job.remote)
    if expected is not None and actual != expected.lower():
        job.partial.unlink()
        raise DownloadError(
            f"{job.remote.path}: {name} mismatch (listing {expected[:12]}…, file {actual[:12]}…);"
            " the partial file was removed"
        )
    job.destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(job.partial, job.destination)


def download_file(
    job: FileJob,
    urls: Sequence[str],
    headers: Mapping[str, str],
    progress: TransferProgress,
    *,
    retries: int = 3,
    retry_wait_s: float = 1.0,
) -> None:
    """Fetch ``job`` from the first of ``urls`` that works, verify it, move it into place."""
    failures: list[str] = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                _transfer(job, url, headers, progress)
            except _Retry as exc:
                if attempt == retries:
                    failures.append(f"{_host(url)}: {exc}")
                else:
                    progress.note(f"{job.remote.path}: {exc}; resuming from {_host(url)}")
                    time.sleep(retry_wait_s * (attempt + 1))
                continue
            except _NextEndpoint as exc:
                failures.append(f"{_host(url)}: {exc}")
                break
            except _Corrupt as exc:
                job.partial.unlink(missing_ok=True)
                raise DownloadError(
                    f"{job.remote.path}: {exc} ({_host(url)}); the partial file was removed"
                ) from exc
            _verify_and_place(job)
            progress.finish_file(job.remote.path)
            return
    kept = " (partial data kept: run the same command again to resume)"
    kept = kept if job.partial.exists() else ""
    raise DownloadError(f"{job.remote.path}: " + "; ".join(failures) + kept)
