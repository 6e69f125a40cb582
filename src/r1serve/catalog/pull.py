"""`r1serve pull`: choose a repo's files, check the listing and the disk, download into the store.

Nothing is written until the whole listing has passed :func:`check_listing` (no name may leave
the model folder, no absurd size, well-formed hashes) and the disk has room for every byte
still missing. Files are then fetched one by one (see ``download.py``); the manifest records
each verified file, so an interrupted pull resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

from r1serve.catalog.catalog import find_entry, find_short_name, load_catalog
from r1serve.catalog.download import (
    FileJob,
    NoProgress,
    TransferProgress,
    download_file,
)
from r1serve.catalog.hub import (
    RemoteFile,
    RepoListing,
    auth_headers,
    check_repo_id,
    ensure_online,
    fetch_listing,
    file_url,
    hub_endpoints,
)
from r1serve.catalog.quants import DEFAULT_QUANT
from r1serve.catalog.store import (
    DEFAULT_REVISION,
    PARTIAL_DIRNAME,
    Manifest,
    ManifestFile,
    ModelName,
    gguf_parts,
    gguf_quant_label,
    meta_dir,
    missing_gguf_parts,
    model_dir,
    read_manifest,
    write_manifest,
)
from r1serve.errors import DownloadError, UnsupportedModelError

MAX_FILE_BYTES = 1 << 40  # 1 TiB: far above any real weight shard or GGUF file
DISK_HEADROOM_BYTES = 64 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DRIVE = re.compile(r"^[A-Za-z]:")

CONFIG_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",  # sentencepiece protobuf, not a pickle
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
        "model.safetensors.index.json",
    }
)
DOC_PREFIXES = ("readme", "license", "licence", "notice", "use_policy")
PICKLE_WEIGHTS = re.compile(r"(pytorch_model|model)(-\d{5}-of-\d{5})?\.bin")

FreeSpace = Callable[[Path], int]


@dataclass(frozen=True, slots=True)
class PullTarget:
    """``REPO``, ``REPO:FILE``, ``REPO:QUANT`` or ``NAME:QUANT`` as typed on the command line."""

    repo_id: str
    filename: str | None = None
    quant: str | None = None  # pick the GGUF file whose name carries it (Q4_K_M)


@dataclass(frozen=True, slots=True)
class PullOptions:
    """How to pull: revision, endpoints to try, what may be downloaded, retry policy."""

    revision: str = DEFAULT_REVISION
    mirrors: tuple[str, ...] = ()
    allow_pickle: bool = False
    token: str | None = None
    retries: int = 3
    retry_wait_s: float = 1.0


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull left in the store."""

    name: str
    folder: Path
    files: tuple[str, ...]
    downloaded: tuple[str, ...]
    skipped: tuple[str, ...]
    endpoint: str


@dataclass(frozen=True, slots=True)
class PullPlan:
    """What a pull is about to do, for a confirmation prompt."""

    repo_id: str
    revision: str
    commit: str
    endpoint: str
    folder: Path
    downloads: tuple[str, ...]
    bytes_needed: int


@dataclass(slots=True)
class _Selection:
    files: list[RemoteFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_pull_target(text: str, gguf: str | None = None) -> PullTarget:
    """Read ``owner/name[:file.gguf|:QUANT]`` or a catalog name ``name[:QUANT]``.

    A catalog model (by short name or by its own repo id) with a quantization resolves to the
    catalog's GGUF repo; ``gguf`` is ``--gguf QUANT``.
    """
    head, _, tail = text.partition(":")
    if tail and gguf:
        raise DownloadError(f"give the quantization once: {text!r} or --gguf {gguf}, not both")
    quant = (gguf or ("" if tail.lower().endswith(".gguf") else tail)).upper() or None
    filename = tail if tail.lower().endswith(".gguf") else None
    if "/" not in head:
        entry = find_short_name(head)
        if entry is None:
            names = ", ".join(e.short_name for e in load_catalog())
            raise DownloadError(f"{head!r} is neither a hub repo id nor a catalog model ({names})")
        if filename is not None:
            raise DownloadError(f"{text!r}: a catalog name takes a quantization, not a file")
        return PullTarget(entry.gguf_repo, quant=quant or DEFAULT_QUANT)
    check_repo_id(head)
    entry = find_entry(head)
    if quant is not None and entry is not None and entry.gguf_repo.lower() != head.lower():
        return PullTarget(entry.gguf_repo, quant=quant)  # the original repo has no GGUF files
    return PullTarget(head, filename, quant)


def unsafe_path_reason(path: str) -> str | None:
    """Why ``path`` from a listing may not become a file under the model folder, or None."""
    if not path or len(path) > 1024:
        return "empty or overlong name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "control character (NUL, newline...) in the name"
    if "\\" in path:
        return "backslash in the name"
    if path.startswith("/") or _DRIVE.match(path):
        return "absolute path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'..', '.' or empty path segment"
    if parts[0] == ".r1serve":
        return "name reserved for r1serve's own files"
    if any(len(part.encode("utf-8")) > 255 for part in parts):
        return "path segment longer than 255 bytes"
    return None


def check_listing(listing: RepoListing) -> None:
    """Refuse the whole listing if any entry is unsafe or implausible."""
    seen: set[str] = set()
    for remote in listing.files:
        reason = unsafe_path_reason(remote.path)
        if reason is not None:
            raise DownloadError(
                f"refusing {listing.repo_id}: listed file {remote.path!r}: {reason}"
            )
        if remote.path in seen:
            raise DownloadError(f"refusing {listing.repo_id}: {remote.path!r} is listed twice")
        seen.add(remote.path)
        if remote.size < 0 or remote.size > MAX_FILE_BYTES:
            raise DownloadError(
                f"refusing {listing.repo_id}: {remote.path!r} declares {remote.size} bytes "
                f"(limit {MAX_FILE_BYTES} for one file)"
            )
        if remote.sha256 is not None and not _SHA256.fullmatch(remote.sha256):
            raise DownloadError(f"refusing {listing.repo_id}: bad sha256 for {remote.path!r}")
        if remote.blob_id is not None and not _GIT_OID.fullmatch(remote.blob_id):
            raise DownloadError(f"refusing {listing.repo_id}: bad blob id for {remote.path!r}")


def _is_doc(path: str) -> bool:
    return "/" not in path and path.lower().startswith(DOC_PREFIXES)


def _gguf_choices(files: Sequence[RemoteFile]) -> list[str]:
    names = [f.path for f in files if f.path.lower().endswith(".gguf")]
    return [n for n in names if gguf_parts(n, names)[:1] == [n]]


def _whole_gguf(listing: RepoListing, first: str) -> list[str]:
    """``first`` and its other parts; refuses a split GGUF the listing does not hold whole."""
    names = [f.path for f in listing.files]
    missing = missing_gguf_parts(first, names)
    if missing:
        raise DownloadError(
            f"{listing.repo_id}: split GGUF {first!r} lacks {len(missing)} of its parts "
            f"({', '.join(missing[:3])}); refusing to download a model that cannot load"
        )
    return gguf_parts(first, names)


def gguf_by_quant(listing: RepoListing, quant: str) -> str:
    """The GGUF file (the first part, if split) whose name carries ``quant``."""
    choices = _gguf_choices(listing.files)
    wanted = quant.upper()
    matches = [c for c in choices if gguf_quant_label(c) == wanted]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DownloadError(
            f"{listing.repo_id} has {len(matches)} GGUF files for {wanted} "
            f"({', '.join(sorted(matches)[:6])}); "
            f"pick one with `r1serve pull {listing.repo_id}:FILE`"
        )
    labels = sorted({label for c in choices if (label := gguf_quant_label(c)) is not None})
    if not choices:
        raise DownloadError(f"{listing.repo_id} has no GGUF files")
    shown = ", ".join(labels) or "none named in the files: use REPO:FILE"
    raise DownloadError(f"{listing.repo_id} has no {wanted} GGUF (quantizations: {shown})")


def select_files(
    listing: RepoListing, filename: str | None, allow_pickle: bool, quant: str | None = None
) -> _Selection:
    """The files to download: weights, config, tokenizer and docs; never code."""
    by_path = {f.path: f for f in listing.files}
    docs = [f for f in listing.files if _is_doc(f.path)]
    if quant is not None:
        filename = gguf_by_quant(listing, quant)
    if filename is not None:
        choices = _gguf_choices(listing.files)
        if not filename.lower().endswith(".gguf"):
            raise DownloadError(f"REPO:FILE pulls one GGUF file; {filename!r} is not one")
        if filename not in by_path:
            listed = ", ".join(choices[:8]) or "none"
            raise DownloadError(f"{listing.repo_id} has no {filename!r} (GGUF files: {listed})")
        chosen = [by_path[p] for p in _whole_gguf(listing, filename)] + docs
    else:
        chosen = _default_selection(listing, allow_pickle, docs)
    chosen_paths = {f.path for f in chosen}
    skipped = [f.path for f in listing.files if f.path not in chosen_paths]
    return _Selection(chosen, skipped)


def _default_selection(
    listing: RepoListing, allow_pickle: bool, docs: list[RemoteFile]
) -> list[RemoteFile]:
    top = [f for f in listing.files if "/" not in f.path]
    configs = [f for f in top if f.path in CONFIG_FILES]
    safetensors = [f for f in top if f.path.endswith(".safetensors")]
    pickles = [f for f in top if PICKLE_WEIGHTS.fullmatch(f.path)]
    ggufs = _gguf_choices(listing.files)
    repo = listing.repo_id
    if safetensors:
        return safetensors + configs + docs
    if pickles:
        if not allow_pickle:
            raise DownloadError(
                f"{repo} has only pickled weights ({pickles[0].path}), which can run code when "
                "loaded; pass --allow-pickle to download them anyway"
            )
        index = [f for f in top if f.path == "pytorch_model.bin.index.json"]
        return pickles + index + configs + docs
    if len(ggufs) == 1:
        by_path = {f.path: f for f in listing.files}
        return [by_path[p] for p in _whole_gguf(listing, ggufs[0])] + docs
    if ggufs:
        shown = ", ".join(ggufs[:6]) + (", ..." if len(ggufs) > 6 else "")
        labels = sorted({q for g in ggufs if (q := gguf_quant_label(g)) is not None})
        quants = f"; or a quantization, `{repo} --gguf {labels[0]}` ({', '.join(labels)})"
        raise DownloadError(
            f"{repo} has {len(ggufs)} GGUF files; pick one with `r1serve pull {repo}:FILE` "
            f"({shown}){quants if labels else ''}"
        )
    raise DownloadError(f"{repo} has no weights r1serve can load (safetensors or GGUF)")


def check_inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refusing a path that a symlink or '..' would lead elsewhere."""
    destination = folder.joinpath(*PurePosixPath(relative).parts)
    current = folder
    for part in PurePosixPath(relative).parts:
        current = current / part
        if current.is_symlink():
            raise DownloadError(f"refusing to write through the symlink {current}")
    root = folder.resolve()
    if not destination.resolve().is_relative_to(root):
        raise DownloadError(f"refusing {relative!r}: it would be written outside {folder}")
    return destination


def _partial_path(folder: Path, remote: RemoteFile) -> Path:
    # Keyed by content hash and path, so a changed file never resumes from stale bytes.
    content = remote.sha256 or remote.blob_id or "unhashed"
    where = hashlib.sha256(remote.path.encode()).hexdigest()[:16]
    return meta_dir(folder) / PARTIAL_DIRNAME / f"{content}-{where}.part"


def _recorded(manifest: Manifest | None, remote: RemoteFile, destination: Path) -> bool:
    if manifest is None or not destination.is_file():
        return False
    entry = manifest.files.get(remote.path)
    return (
        entry is not None
        and entry.size == remote.size == destination.stat().st_size
        and entry.sha256 == remote.sha256
        and entry.blob_id == remote.blob_id
    )


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk_space(folder: Path, needed: int, free_space: FreeSpace) -> None:
    """Refuse when the disk under ``folder`` cannot hold ``needed`` more bytes."""
    where = _existing_ancestor(folder)
    free = free_space(where)
    if needed + DISK_HEADROOM_BYTES > free:
        raise DownloadError(
            f"not enough disk space: {_gib(needed)} to download, {_gib(free)} free at {where}"
        )


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.2f} GiB"


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _plan(
    folder: Path, selection: _Selection, manifest: Manifest | None
) -> tuple[list[FileJob], int]:
    jobs, needed = [], 0
    for remote in selection.files:
        destination = check_inside(folder, remote.path)
        if _recorded(manifest, remote, destination):
            continue
        job = FileJob(remote, destination, _partial_path(folder, remote))
        have = job.partial.stat().st_size if job.partial.is_file() else 0
        needed += max(remote.size - have, 0)
        jobs.append(job)
    return jobs, needed


def pull(
    target: PullTarget,
    data_dir: Path,
    options: PullOptions | None = None,
    progress: TransferProgress | None = None,
    free_space: FreeSpace = _disk_free,
    confirm: Callable[[PullPlan], bool] | None = None,
) -> PullResult:
    """Download ``target`` into the store under ``data_dir`` and return what is there.

    ``confirm`` sees the plan after every check passed and before anything is written.
    """
    options = options or PullOptions()
    progress = progress or NoProgress()
    ensure_online()
    endpoints = hub_endpoints(options.mirrors)
    listing = fetch_listing(target.repo_id, options.revision, endpoints, options.token)
    check_listing(listing)
    selection = select_files(listing, target.filename, options.allow_pickle, target.quant)
    try:
        folder = model_dir(data_dir, listing.repo_id, options.revision)
    except UnsupportedModelError as exc:
        raise DownloadError(exc.message) from exc
    manifest = read_manifest(folder)
    jobs, needed = _plan(folder, selection, manifest)
    check_disk_space(folder, needed, free_space)
    if confirm is not None and jobs:
        plan = PullPlan(
            listing.repo_id,
            options.revision,
            listing.commit,
            listing.endpoint,
            folder,
            tuple(j.remote.path for j in jobs),
            needed,
        )
        if not confirm(plan):
            raise DownloadError("cancelled; nothing was downloaded")
    # Nothing was written up to here; from now on the folder and its lock exist.
    meta_dir(folder).mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(meta_dir(folder) / "pull.lock", timeout=0):
            selected = {f.path for f in selection.files}
            _download_all(listing, folder, manifest, selected, jobs, endpoints, options, progress)
    except Timeout as exc:
        raise DownloadError(f"another `r1serve pull` is writing {folder}") from exc
    gguf = target.filename
    if target.quant is not None:  # the store names the file; REPO:QUANT finds it again
        gguf = selection.files[0].path
    name = ModelName(listing.repo_id, options.revision, gguf)
    return PullResult(
        name=str(name),
        folder=folder,
        files=tuple(f.path for f in selection.files),
        downloaded=tuple(j.remote.path for j in jobs),
        skipped=tuple(selection.skipped),
        endpoint=listing.endpoint,
    )


def _save_manifest(folder: Path, manifest: Manifest) -> None:
    try:
        write_manifest(folder, manifest)
    except OSError as exc:
        raise DownloadError(
            f"cannot write the manifest in {folder}: {exc.strerror or exc}"
        ) from exc


def _download_all(
    listing: RepoListing,
    folder: Path,
    manifest: Manifest | None,
    selected: set[str],
    jobs: list[FileJob],
    endpoints: Sequence[str],
    options: PullOptions,
    progress: TransferProgress,
) -> None:
    if manifest is None or manifest.repo_id != listing.repo_id:
        manifest = Manifest(listing.repo_id, options.revision, listing.commit, listing.endpoint)
    manifest.commit, manifest.endpoint = listing.commit, listing.endpoint
    # Files of this pull are pending exactly when they still need downloading; pending files
    # of an earlier, different pull into the same folder (another GGUF) stay pending.
    pending = {j.remote.path for j in jobs}
    manifest.pending = sorted((set(manifest.pending) - selected) | pending)
    _save_manifest(folder, manifest)
    # The endpoint that listed the repo first, then the others in the order given.
    ordered = [listing.endpoint] + [e for e in endpoints if e != listing.endpoint]
    headers = auth_headers(options.token)
    for job in jobs:
        urls = [file_url(e, listing.repo_id, listing.commit, job.remote.path) for e in ordered]
        download_file(
            job,
            urls,
            headers,
            progress,
            retries=options.retries,
            retry_wait_s=options.retry_wait_s,
        )
        remote = job.remote
        manifest.files[remote.path] = ManifestFile(remote.size, remote.sha256, remote.blob_id)
        manifest.pending = [p for p in manifest.pending if p != remote.path]
        _save_manifest(folder, manifest)
