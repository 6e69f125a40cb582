"""A safetensors copy of each GGUF's dequantized weights, so later starts skip the conversion.

transformers converts a GGUF by reading the whole file twice and dequantizing every tensor
(about 20 s for SmolLM2-135M on two cores). The result depends only on the file's content, the
dtype and the transformers version, so it is saved once under the cache directory and loaded
from there afterwards (about a second); the same file copied elsewhere finds it too. A cache
that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("r1serve.engine")

_DONE = "complete"


def cache_entry(gguf: Path, dtype: Any, root: Path) -> Path:
    """Where the converted copy of ``gguf`` at ``dtype`` lives (keyed by the file's content)."""
    import transformers

    key = f"{content_digest(gguf, root)}|{dtype}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return root / f"{gguf.stem}-{digest}"


def content_digest(path: Path, root: Path) -> str:
    """sha256 of the file, remembered per (path, size, mtime) so it is read once."""
    stat = path.stat()
    memo_key = hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()[:24]
    memo = root / "digests" / memo_key
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
    digest = sha.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest + "\n")
    except OSError:
        pass  # only a speed-up
    return digest


def load_cached(entry: Path, dtype: Any, device_map: Any = None) -> Any | None:
    """The model from a complete cache entry, or None."""
    if not (entry / _DONE).is_file():
        return None
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            str(entry),
            dtype=dtype,
            local_files_only=True,
            use_safetensors=True,
            device_map=device_map,
        )
    except Exception as exc:  # a damaged entry: convert again
        log.warning("ignoring the converted-GGUF cache at %s: %s", entry, exc)
        return None


def store(model: Any, entry: Path) -> None:
    """Save ``model``'s weights and config as a cache entry (atomically; failures only warn)."""
    from safetensors.torch import save_model

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=entry.parent))
        try:
            config = model.config.to_dict()
            config.pop("quantization_config", None)  # the copy is plain weights, not GGUF
            config.pop("_name_or_path", None)
            type(model.config).from_dict(config).to_json_file(staging / "config.json")
            model.generation_config.to_json_file(staging / "generation_config.json")
            save_model(model, str(staging / "model.safetensors"))
            (staging / _DONE).write_text("ok\n")
            os.replace(staging, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        log.warning("could not cache the converted GGUF at %s: %s", entry, exc)
