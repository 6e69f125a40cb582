"""From a ``ModelSource`` to a loaded model with its tokenizer and chat template.

``load_model`` loads the weights with transformers and gathers what the engine needs around them.
Nothing here touches the network, and no model code from a repository is ever run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1serve.engine.source import ModelSource, check_transformers_gguf
from r1serve.engine.text.chat_template import ChatFormatter, compile_template
from r1serve.engine.text.gguf_tokenizer import build_gguf_tokenizer
from r1serve.engine.text.tokenizer import HFTokenizer, read_tokenizer_dir
from r1serve.engine.transformers.gguf_cache import cache_entry, load_cached, store
from r1serve.errors import ConfigError, UnsupportedModelError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

# Tokens that end a turn in common chat templates; the model must stop on them too.
_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """The model's recommended sampling values (generation_config.json); None: not given."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model in eval mode with everything the engine needs around it."""

    source: ModelSource
    model: PreTrainedModel
    tokenizer: HFTokenizer
    chat_template: str | None
    eos_token_ids: frozenset[int]
    bos_token_id: int | None
    context_length: int
    sampling_defaults: SamplingDefaults
    dtype: torch.dtype
    device: torch.device
    config: PretrainedConfig
    load_seconds: float

    def chat_formatter(self) -> ChatFormatter:
        """A ChatFormatter for this model's template; ConfigError when it has none."""
        if self.chat_template is None:
            raise ConfigError(
                f"model {self.source.name} has no chat template; pass one with --chat-template"
            )
        return ChatFormatter(
            self.chat_template,
            self.tokenizer,
            bos_token=self.tokenizer.bos_token,
            eos_token=self.tokenizer.eos_token,
        )


# --- loading it --------------------------------------------------------------------------------


def load_model(
    source: ModelSource,
    *,
    dtype: str = "auto",
    device: str = "auto",
    max_model_len: int | None = None,
    chat_template_path: Path | None = None,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load the weights (eval mode), tokenizer, chat template and generation defaults.

    ``cache_dir`` keeps a converted copy of GGUF weights so later loads are fast.
    """
    import torch

    started = time.perf_counter()
    target = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, target)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)

    gguf_context: int | None = None
    if source.kind == "gguf":
        check_transformers_gguf(source.file)
        built = build_gguf_tokenizer(source.file)
        backend, bos, eos, template = (
            built.tokenizer,
            built.bos_token,
            built.eos_token,
            built.chat_template,
        )
        gguf_context = built.context_length
    else:
        files = read_tokenizer_dir(source.path)
        backend, bos, eos = files.backend, files.bos_token, files.eos_token
        template = files.chat_template
    if chat_template_path is not None:
        template = _read_template_file(chat_template_path)
    elif template is not None:
        compile_template(template)  # a broken template in the model's files fails at start-up

    model = _load_weights(source, torch_dtype, target, spread=device == "auto", cache=cache_dir)
    config = model.config
    context_length = _context_length(config, gguf_context, max_model_len, source.name)
    generation = model.generation_config
    eos_ids = (
        _ids(generation.eos_token_id)
        | _ids(getattr(config, "eos_token_id", None))
        | _turn_end_ids(template, backend.token_to_id)
    )
    vocab_rows = _embedding_rows(model)
    tokenizer = HFTokenizer(
        backend, bos_token=bos, eos_token=eos, extra_eos_token_ids=eos_ids, vocab_size=vocab_rows
    )
    if not tokenizer.eos_token_ids:
        raise UnsupportedModelError(f"model {source.name} declares no end-of-sequence token")
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        bos_id = next(iter(_ids(generation.bos_token_id)), None)
    seconds = time.perf_counter() - started
    log.info(
        "loaded %s (%s) as %s on %s in %.1f s; context %d tokens",
        source.name,
        source.kind,
        str(torch_dtype).removeprefix("torch."),
        target,
        seconds,
        context_length,
    )
    return LoadedModel(
        source=source,
        model=model,
        tokenizer=tokenizer,
        chat_template=template,
        eos_token_ids=tokenizer.eos_token_ids,
        bos_token_id=bos_id,
        context_length=context_length,
        sampling_defaults=_sampling_defaults(source),
        dtype=torch_dtype,
        device=target,
        config=config,
        load_seconds=seconds,
    )


def _resolve_device(device: str) -> torch.device:
    """auto: CUDA when available, else CPU; cpu, cuda and cuda:N are checked against the machine."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from exc
    if target.type == "cpu":
        return target
    if target.type != "cuda":
        raise ConfigError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested, but CUDA is not available here")
    if target.index is not None and target.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return target


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: float32 on CPU, bfloat16 on CUDA (float16 where the GPU lacks bfloat16)."""
    import torch

    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use auto, {', '.join(_DTYPES)}")
    if device.type == "cpu" and dtype != "float32":
        log.info("dtype %s on CPU: it saves memory, but float32 runs faster on most CPUs", dtype)
    result: torch.dtype = getattr(torch, dtype)
    return result


def _read_template_file(path: Path) -> str:
    try:
        template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read chat template {path}: {exc}") from exc
    compile_template(template)
    return template


def _load_weights(
    source: ModelSource,
    dtype: torch.dtype,
    device: torch.device,
    *,
    spread: bool = False,
    cache: Path | None = None,
) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # r1serve prints its own status line
    # use_safetensors: never fall back to pickled weights that happen to sit next to them.
    extra: dict[str, Any] = (
        {"gguf_file": source.gguf_file} if source.gguf_file else {"use_safetensors": True}
    )
    if device.type == "cuda":
        # Straight onto the GPU(s); with several GPUs and --device auto, layers are spread.
        many = spread and torch.cuda.device_count() > 1
        extra["device_map"] = "auto" if many else {"": str(device)}
    entry = cache_entry(source.file, dtype, cache) if cache and source.gguf_file else None
    model = load_cached(entry, dtype, extra.get("device_map")) if entry is not None else None
    if model is None:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(source.path),
                dtype=dtype,
                local_files_only=True,
                trust_remote_code=False,
                **extra,
            )
        except Exception as exc:  # transformers raises many types here; all mean "cannot load"
            raise UnsupportedModelError(f"cannot load model {source.name}: {exc}") from exc
        if entry is not None:
            store(model, entry)
    loaded: PreTrainedModel = (
        model if device.type == "cuda" else model.to(device)  # type: ignore[arg-type]
    )
    loaded.eval()
    return loaded


def _embedding_rows(model: PreTrainedModel) -> int | None:
    """Rows of the input embedding: the ids the model takes, maybe more than the tokenizer has."""
    embeddings = model.get_input_embeddings()
    weight = getattr(embeddings, "weight", None)
    return int(weight.shape[0]) if weight is not None else None


def _context_length(
    config: PretrainedConfig, gguf_context: int | None, max_model_len: int | None, name: str
) -> int:
    """The model's context (config or GGUF), capped by --max-model-len."""
    text_config = config.get_text_config()
    supported: int | None = gguf_context
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, key, None)
        if supported is None and isinstance(value, int) and value > 0:
            supported = value
    if max_model_len is None:
        if supported is None:
            raise UnsupportedModelError(
                f"cannot tell the context length of {name}; pass --max-model-len"
            )
        return supported
    if max_model_len < 1:
        raise ConfigError(f"max_model_len must be at least 1, got {max_model_len}")
    if supported is not None and max_model_len > supported:
        raise ConfigError(
            f"max_model_len {max_model_len} exceeds the {supported} tokens {name} supports"
        )
    return max_model_len


def _ids(value: object) -> set[int]:
    """Token ids as configs write them: an int, a list of ints, or None."""
    if isinstance(value, int):
        return {value}
    if isinstance(value, list | tuple):
        return {v for v in value if isinstance(v, int)}
    return set()


def _turn_end_ids(template: str | None, token_to_id: Callable[[str], int | None]) -> set[int]:
    """Ids of the turn-end tokens (like <|im_end|>) that the chat template writes."""
    if not template:
        return set()
    found = (token_to_id(token) for token in _TURN_END_TOKENS if token in template)
    return {token_id for token_id in found if token_id is not None}


def _sampling_defaults(source: ModelSource) -> SamplingDefaults:
    """The sampling values generation_config.json sets; only what the file itself says."""
    path = source.path / "generation_config.json"
    if source.kind != "hf_dir" or not path.is_file():
        return SamplingDefaults()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{path} is not valid JSON: {exc}") from exc
    values = {
        key: data[key]
        for key in _SAMPLING_KEYS
        if isinstance(data, dict) and isinstance(data.get(key), int | float)
    }
    return SamplingDefaults(**values)
