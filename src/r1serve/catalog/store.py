"""The local model store under ``<data_dir>/models``: layout, manifests, names, lookup, removal.

Layout (one folder per repo and revision, the repo's own file tree inside it)::

    <data_dir>/models/
      <owner>--<name>/                 repo id; the hub forbids "--" in ids, so this is unambiguous
        <revision>/                    as asked for ("main", a tag, a commit), "/" escaped as %2F
          config.json, model.safetensors, tokenizer.json, ...   or  model-Q4_K_M.gguf
          .r1serve/manifest.json       repo, revision, commit, endpoint, each file's size and hash
          .r1serve/partial/<hash>.part downloads in progress (kept across runs to resume)

Names, as `r1serve ls` shows them and `r1serve serve --model` accepts them:
``owner/name`` (a Hugging Face folder at revision main), ``owner/name@rev`` (another revision),
``owner/name:file.gguf`` (one GGUF file; ``@rev`` goes before the colon). ``owner/name:Q4_K_M``
names the one stored GGUF of the repo whose file carries that quantization, and a catalog short
name (``deepseek-r1-distill-qwen-7b:q4_k_m``) stands for the catalog's GGUF repo of that model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from r1serve.errors import ModelNotFoundError, UnsupportedModelError

MODELS_DIRNAME = "models"
META_DIRNAME = ".r1serve"
MANIFEST_NAME = "manifest.json"
PARTIAL_DIRNAME = "partial"
DEFAULT_REVISION = "main"
SAFE_WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth")


@dataclass(slots=True)
class ManifestFile:
    """A file the store holds, with the hashes it was verified against."""

    size: int
    sha256: str | None = None
    blob_id: str | None = None


@dataclass(slots=True)
class Manifest:
    """What a model folder holds and where it came from."""

    repo_id: str
    revision: str
    commit: str
    endpoint: str
    files: dict[str, ManifestFile] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # files still to download

    def to_json(self) -> str:
        """Serialized form written to ``.r1serve/manifest.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        files = {path: ManifestFile(**info) for path, info in data.pop("files", {}).items()}
        return cls(files=files, **data)


@dataclass(frozen=True, slots=True)
class StoredModel:
    """One line of `r1serve ls`."""

    name: str
    repo_id: str
    revision: str
    format: str  # "safetensors", "gguf", "pytorch" or "incomplete"
    dtype: str
    size_bytes: int
    path: Path  # what a loader opens: the folder, or the .gguf file


@dataclass(frozen=True, slots=True)
class ModelName:
    """A parsed store name: repo, revision and, for a single GGUF, the file."""

    repo_id: str
    revision: str = DEFAULT_REVISION
    filename: str | None = None

    def __str__(self) -> str:
        text = self.repo_id
        if self.revision != DEFAULT_REVISION:
            text += f"@{self.revision}"
        return f"{text}:{self.filename}" if self.filename else text


def parse_model_name(name: str) -> ModelName:
    """Split ``owner/name[@rev][:file]``; hub ids cannot hold ``@`` or ``:``, so this is exact."""
    head, _, filename = name.partition(":")
    repo_id, _, revision = head.partition("@")
    return ModelName(repo_id, revision or DEFAULT_REVISION, filename or None)


def revision_dirname(revision: str) -> str:
    """A folder name for ``revision``; ``refs/pr/1`` becomes ``refs%2Fpr%2F1``."""
    if revision in ("", ".", "..") or "\0" in revision:
        raise UnsupportedModelError(f"not a usable revision: {revision!r}")
    return quote(revision, safe="")


def models_root(data_dir: Path) -> Path:
    """Where every pulled model lives."""
    return data_dir / MODELS_DIRNAME


def model_dir(data_dir: Path, repo_id: str, revision: str = DEFAULT_REVISION) -> Path:
    """The folder of ``repo_id`` at ``revision``."""
    parts = repo_id.split("/")
    if not 1 <= len(parts) <= 2 or any(p in ("", ".", "..") or "--" in p for p in parts):
        raise UnsupportedModelError(f"not a hub repo id: {repo_id!r}")
    return models_root(data_dir) / "--".join(parts) / revision_dirname(revision)


def meta_dir(folder: Path) -> Path:
    """The store's own files inside a model folder."""
    return folder / META_DIRNAME


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of a model folder, or None when there is none (or it is unreadable)."""
    try:
        return Manifest.from_json((meta_dir(folder) / MANIFEST_NAME).read_text("utf-8"))
    except (OSError, ValueError, TypeError):
        return None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically, so a crash leaves the old or the new one."""
    directory = meta_dir(folder)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=directory, suffix=".tmp", delete=False
    ) as handle:
        try:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            Path(handle.name).unlink(missing_ok=True)
            raise
    os.replace(handle.name, directory / MANIFEST_NAME)


def _hf_dtype(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return "?"
    if not isinstance(config, dict):
        return "?"
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method"):
        return str(quant["quant_method"])
    return str(config.get("torch_dtype") or config.get("dtype") or "?")


def _gguf_dtype(path: Path) -> str:
    from r1serve.catalog.gguf_header import read_gguf_header

    try:
        return read_gguf_header(path).file_type_label
    except UnsupportedModelError:
        return "?"


SPLIT_GGUF = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def gguf_parts(first: str, names: Iterable[str]) -> list[str]:
    """All files of a split GGUF (``x-00001-of-00003.gguf``), or just ``first``."""
    match = SPLIT_GGUF.search(first)
    if match is None:
        return [first]
    stem, count = first[: match.start()], match.group(2)
    wanted = {f"{stem}-{i:05d}-of-{count}.gguf" for i in range(1, int(count) + 1)}
    return sorted(n for n in names if n in wanted)


# llama.cpp's quantization names as GGUF publishers put them in file names: Q4_K_M, q8_0,
# IQ4_XS, Q4_0_4_4, UD-Q2_K_XL (unsloth), F16, BF16.
_QUANT_LABEL = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Za-z0-9]{1,2})*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE
)


def gguf_quant_label(path: str) -> str | None:
    """The quantization a GGUF file's name carries (``Q4_K_M``), upper case, or None."""
    name = path.rsplit("/", 1)[-1]
    stem = SPLIT_GGUF.sub("", name) if SPLIT_GGUF.search(name) else name.removesuffix(".gguf")
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    labels = _QUANT_LABEL.findall(stem)
    return labels[-1].upper() if labels else None


def missing_gguf_parts(first: str, names: Iterable[str]) -> list[str]:
    """Parts of the split GGUF starting at ``first`` that ``names`` lacks (none: complete)."""
    match = SPLIT_GGUF.search(first)
    if match is None:
        return []
    stem, count = first[: match.start()], match.group(2)
    present = set(names)
    wanted = [f"{stem}-{i:05d}-of-{count}.gguf" for i in range(1, int(count) + 1)]
    return [n for n in wanted if n not in present]


def _entry(name: ModelName, kind: str, dtype: str, size: int, path: Path) -> StoredModel:
    return StoredModel(str(name), name.repo_id, name.revision, kind, dtype, size, path)


def _entries_of(folder: Path, manifest: Manifest) -> list[StoredModel]:
    base = ModelName(manifest.repo_id, manifest.revision)
    pending = set(manifest.pending)
    names = set(manifest.files) | pending
    sizes = {n: f.size for n, f in manifest.files.items()}
    entries = []
    plain = [n for n in names if not n.endswith(".gguf")]
    if "config.json" in names and any(
        n.endswith(SAFE_WEIGHT_SUFFIXES + PICKLE_WEIGHT_SUFFIXES) for n in plain
    ):
        size = sum(sizes.get(n, 0) for n in plain)
        if pending.intersection(plain):
            entries.append(_entry(base, "incomplete", "-", size, folder))
        else:
            kind = "safetensors" if any(n.endswith(".safetensors") for n in plain) else "pytorch"
            entries.append(_entry(base, kind, _hf_dtype(folder), size, folder))
    firsts = [n for n in names if n.endswith(".gguf") and SPLIT_GGUF.search(n) is None]
    firsts += [n for n in names if (m := SPLIT_GGUF.search(n)) and int(m.group(1)) == 1]
    for first in sorted(firsts):
        parts = gguf_parts(first, names)
        name = ModelName(base.repo_id, base.revision, first)
        size = sum(sizes.get(n, 0) for n in parts)
        if pending.intersection(parts):
            entries.append(_entry(name, "incomplete", "-", size, folder / first))
        else:
            path = folder / first
            entries.append(_entry(name, "gguf", _gguf_dtype(path), size, path))
    if not entries and pending:
        entries.append(_entry(base, "incomplete", "-", sum(sizes.values()), folder))
    return entries


def _model_folders(data_dir: Path) -> list[Path]:
    root = models_root(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        revision
        for repo in root.iterdir()
        if repo.is_dir() and not repo.is_symlink()
        for revision in repo.iterdir()
        if revision.is_dir() and not revision.is_symlink()
    )


def list_models(data_dir: Path) -> list[StoredModel]:
    """Every model in the store, by name."""
    entries: list[StoredModel] = []
    for folder in _model_folders(data_dir):
        manifest = read_manifest(folder)
        if manifest is not None:
            entries.extend(_entries_of(folder, manifest))
    return sorted(entries, key=lambda e: e.name.lower())


def _catalog_name(name: ModelName) -> ModelName:
    """``deepseek-r1-distill-qwen-7b[:q4_k_m]`` as the catalog's GGUF repo and quantization."""
    if "/" in name.repo_id:
        return name
    from r1serve.catalog.catalog import find_short_name
    from r1serve.catalog.quants import DEFAULT_QUANT

    entry = find_short_name(name.repo_id)
    if entry is None:
        return name
    return ModelName(entry.gguf_repo, name.revision, name.filename or DEFAULT_QUANT)


def _find(name: str, data_dir: Path) -> StoredModel | None:
    try:
        wanted = _catalog_name(parse_model_name(name))
        folder = model_dir(data_dir, wanted.repo_id, wanted.revision)
    except UnsupportedModelError:
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    entries = [e for e in _entries_of(folder, manifest) if e.format != "incomplete"]
    for entry in entries:
        if parse_model_name(entry.name) == wanted:
            return entry
    ggufs = [e for e in entries if e.format == "gguf"]
    if wanted.filename is not None and not wanted.filename.lower().endswith(".gguf"):
        # REPO:QUANT (or a catalog name): the one stored GGUF whose file carries that quant.
        quant = wanted.filename.upper()
        matches = [e for e in ggufs if gguf_quant_label(str(e.path)) == quant]
        return matches[0] if len(matches) == 1 else None
    if wanted.filename is None and len(entries) == 1 and len(ggufs) == 1:
        return ggufs[0]  # a repo pulled for its only GGUF answers to the bare repo name too
    return None


def lookup(name: str, data_dir: Path) -> Path | None:
    """The path a loader should open for a name `r1serve ls` shows: a folder or a .gguf file."""
    entry = _find(name, data_dir)
    return entry.path if entry is not None else None


def remove_model(name: str, data_dir: Path) -> StoredModel:
    """Delete a stored model (a whole folder, or one GGUF file of it)."""
    entry = next((e for e in list_models(data_dir) if e.name == name), None) or _find(
        name, data_dir
    )
    if entry is None:
        raise ModelNotFoundError(f"no model named {name!r} in {models_root(data_dir)}")
    parsed = parse_model_name(entry.name)
    folder = model_dir(data_dir, parsed.repo_id, parsed.revision)
    manifest = read_manifest(folder)
    if entry.format == "gguf" and manifest is not None and len(_entries_of(folder, manifest)) > 1:
        assert parsed.filename is not None  # a gguf entry's name always carries its file
        for part in gguf_parts(parsed.filename, manifest.files):
            (folder / part).unlink(missing_ok=True)
            del manifest.files[part]
        write_manifest(folder, manifest)
        return entry
    shutil.rmtree(folder)
    repo_folder = folder.parent
    if not any(repo_folder.iterdir()):
        repo_folder.rmdir()
    return entry
