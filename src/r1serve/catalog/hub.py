"""The Hugging Face hub, or a mirror of it: endpoints, repo listings, file streams.

Requests go through huggingface_hub's shared HTTP client, so proxies from the environment
(``HTTPS_PROXY``, ``NO_PROXY``...) and ``HF_HUB_OFFLINE`` behave as in every other hub tool. The
token (``HF_TOKEN`` or ``hf auth login``) goes to the endpoint the user named and never follows a
redirect to another host: a mirror's CDN gets no credentials.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_session, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, validate_repo_id

from r1serve.errors import DownloadError

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_REDIRECTS = 10
_CREDENTIALS = ("authorization", "cookie")
# Connect fast to fall through to the next mirror; allow slow reads of big files.
HTTP_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a repo listing: its path, size and the hashes the hub publishes."""

    path: str
    size: int
    sha256: str | None  # LFS files: sha256 of the content
    blob_id: str | None  # every file: git blob sha1 of the content

    @property
    def is_lfs(self) -> bool:
        """Whether the hub stores this file in LFS (and so gives its sha256)."""
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class RepoListing:
    """A repo at one commit, as one endpoint listed it."""

    repo_id: str
    revision: str
    commit: str
    endpoint: str
    files: tuple[RemoteFile, ...]


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed repo id before it becomes part of a URL or a folder name."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DownloadError(f"not a hub repo id: {repo_id!r}") from exc


def hub_endpoints(mirrors: Sequence[str] = ()) -> list[str]:
    """Endpoints to try, in order: each ``--mirror``, then ``HF_ENDPOINT`` (or huggingface.co)."""
    endpoints: list[str] = []
    for url in [*mirrors, os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DownloadError(f"not an http(s) URL: {url!r}")
        normalized = url.rstrip("/")
        if normalized not in endpoints:
            endpoints.append(normalized)
    return endpoints


def ensure_online() -> None:
    """Refuse to download when huggingface_hub is in offline mode."""
    if constants.is_offline_mode():
        raise DownloadError("HF_HUB_OFFLINE is set: unset it to download models")


def auth_headers(token: str | None) -> dict[str, str]:
    """User agent, plus the token when there is one (explicit, HF_TOKEN or a stored login)."""
    return build_hf_headers(token=token, library_name="r1serve")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = f"HTTP {exc.response.status_code}"
        if isinstance(exc, GatedRepoError):
            return f"{status}, gated repo: accept its terms on the hub and set HF_TOKEN"
        if isinstance(exc, RevisionNotFoundError):
            return f"{status}, no such revision"
        if isinstance(exc, RepositoryNotFoundError):
            return f"{status}, no such repo (or a private one: set HF_TOKEN)"
        return status
    if isinstance(exc, httpx2.ConnectError):
        return "cannot connect"
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _sibling_to_file(sibling: Any, endpoint: str) -> RemoteFile:
    if not isinstance(sibling.rfilename, str):
        raise DownloadError(f"{endpoint} listed a file without a name")
    size = sibling.lfs.size if sibling.lfs is not None else sibling.size
    if isinstance(size, bool) or not isinstance(size, int):
        raise DownloadError(f"{endpoint} gives no size for {sibling.rfilename!r}")
    sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
    return RemoteFile(sibling.rfilename, size, sha256, sibling.blob_id)


def _list_at(endpoint: str, repo_id: str, revision: str, token: str | None) -> RepoListing:
    api = HfApi(endpoint=endpoint, token=token, library_name="r1serve")
    info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=60.0)
    if not info.sha or info.siblings is None:
        raise DownloadError(f"{endpoint} gave no commit or file list for {repo_id}")
    files = tuple(_sibling_to_file(s, endpoint) for s in info.siblings)
    return RepoListing(repo_id, revision, info.sha, endpoint, files)


def fetch_listing(
    repo_id: str, revision: str, endpoints: Sequence[str], token: str | None
) -> RepoListing:
    """The repo's files with sizes and hashes, from the first endpoint that answers."""
    check_repo_id(repo_id)
    failures = []
    for endpoint in endpoints:
        try:
            return _list_at(endpoint, repo_id, revision, token)
        except DownloadError as exc:
            failures.append(exc.message)
        except (httpx2.HTTPError, HfHubHTTPError, ValueError, KeyError, TypeError) as exc:
            # ValueError covers an HTML page where JSON was expected.
            failures.append(f"{endpoint}: {_describe(exc)}")
    raise DownloadError(f"cannot list {repo_id}@{revision}: " + "; ".join(failures))


def file_url(endpoint: str, repo_id: str, commit: str, path: str) -> str:
    """Where ``path`` at ``commit`` resolves on ``endpoint``."""
    return hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


@contextmanager
def open_stream(url: str, headers: Mapping[str, str]) -> Iterator[httpx2.Response]:
    """GET ``url`` as a stream, following redirects; the token never leaves the first origin."""
    session = get_session()
    sent_headers = dict(headers)
    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        request = session.build_request("GET", url, headers=sent_headers, timeout=HTTP_TIMEOUT)
        response = session.send(request, stream=True, follow_redirects=False)
        if not response.has_redirect_location:
            try:
                yield response
            finally:
                response.close()
            return
        location = response.headers["Location"]
        response.close()
        url = urljoin(url, location)
        if _origin(url) != origin:
            sent_headers = {k: v for k, v in sent_headers.items() if k.lower() not in _CREDENTIALS}
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects for {url}")


def fetch_small_file(
    repo_id: str,
    path: str,
    revision: str,
    endpoints: Sequence[str],
    token: str | None,
    limit_bytes: int = 4 << 20,
) -> bytes:
    """A small file (``config.json``) from the first endpoint that has it."""
    check_repo_id(repo_id)
    ensure_online()
    failures = []
    for endpoint in endpoints:
        url = file_url(endpoint, repo_id, revision, path)
        try:
            with open_stream(url, auth_headers(token)) as response:
                if response.status_code != 200:
                    failures.append(f"{endpoint}: HTTP {response.status_code}")
                    continue
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit_bytes:
                        raise DownloadError(f"{path} of {repo_id} is larger than {limit_bytes} B")
                return body
        except httpx2.HTTPError as exc:
            failures.append(f"{endpoint}: {_describe(exc)}")
    raise DownloadError(f"cannot fetch {path} of {repo_id}: " + "; ".join(failures))
