"""The llama.cpp backend from settings: read the GGUF, plan the KV cache, start llama.cpp's loop.

The tokenizer and chat template come from the GGUF's metadata through r1serve's own code, as on
the transformers engine; llama.cpp gets token ids only. Its HTTP listener (xllamacpp always
opens one) binds to 127.0.0.1 on a random port and accepts only a random key that lives in this
process alone, so nothing can reach the model around r1serve's auth.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xllamacpp  # at import: the registry's available() asks whether the binding is here

from r1serve.engine.built import BuiltEngine
from r1serve.engine.kv import CPU, KVPlan, available_memory, plan_kv
from r1serve.engine.llamacpp.engine import LlamaCppEngine
from r1serve.engine.llamacpp.held import TokenPieces
from r1serve.engine.source import ModelSource
from r1serve.engine.text.chat_template import ChatFormatter, compile_template
from r1serve.engine.text.gguf_tokenizer import build_gguf_tokenizer, read_gguf_metadata
from r1serve.engine.text.tokenizer import HFTokenizer
from r1serve.errors import ConfigError, UnsupportedModelError
from r1serve.settings import Settings

log = logging.getLogger("r1serve.engine")

_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
# Slots on a CPU unless --max-num-seqs says otherwise: llama.cpp reserves (and clears) every
# slot's KV cache at start-up, and a few cores gain little from more parallel sequences.
CPU_SLOTS = 4
# On a CPU the KV cache defaults to at most this many times the weights' size (but never less
# than CPU_SLOTS x CPU_MIN_SLOT_TOKENS): llama.cpp makes the whole reservation resident at
# start-up, and a 30%-of-RAM plan gave a 90 MB model 720 MiB of cache and a 1.1 GB R1 distill
# 6.8 GB. --max-model-len or --kv-cache-tokens plan from free memory as before.
CPU_KV_PER_WEIGHT = 2
CPU_MIN_SLOT_TOKENS = 2048
MIB = 1024**2
# Bytes per cached element: f16, and llama.cpp's 32-element blocks with one f16 scale.
_KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True, slots=True)
class GGUFShape:
    """What the KV plan needs from a GGUF's metadata."""

    layers: int
    kv_heads: int
    head_dim: int
    context_length: int | None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], name: str) -> GGUFShape:
        arch = meta.get("general.architecture")
        try:
            layers = int(meta[f"{arch}.block_count"])
            heads = int(meta[f"{arch}.attention.head_count"])
            kv_heads = int(meta.get(f"{arch}.attention.head_count_kv") or heads)
            head_dim = int(
                meta.get(f"{arch}.attention.key_length")
                or int(meta[f"{arch}.embedding_length"]) // heads
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UnsupportedModelError(f"{name}: GGUF metadata lacks {exc}") from exc
        context = meta.get(f"{arch}.context_length")
        return cls(layers, kv_heads, head_dim, int(context) if context else None)

    def bytes_per_token(self, kv_dtype: str) -> tuple[int, str]:
        size = _KV_BYTES[kv_dtype]
        total = int(self.layers * self.kv_heads * self.head_dim * 2 * size)
        formula = (
            f"{self.layers} layers x {self.kv_heads} KV heads x {self.head_dim} dims x 2 x "
            f"{size:g} bytes ({kv_dtype})"
        )
        return total, formula


def has_gpu() -> bool:
    """Whether this xllamacpp build sees a GPU (a CUDA, ROCm, Metal or Vulkan wheel)."""
    return any(
        getattr(info.get("type"), "name", "").endswith(("GPU", "IGPU"))
        for info in xllamacpp.get_device_info()
    )


def gpu_layers(settings: Settings, gpu: bool) -> int:
    """Layers offloaded: the setting, else all (-1: llama.cpp fits what it can) on a GPU build."""
    if settings.device == "cpu":
        return 0
    if settings.gpu_layers is not None:
        if settings.gpu_layers > 0 and not gpu:
            log.warning("--gpu-layers %d, but this llama.cpp build has no GPU", settings.gpu_layers)
        return settings.gpu_layers
    return -1 if gpu else 0


def context_length(shape: GGUFShape, max_model_len: int | None, name: str) -> int:
    supported = shape.context_length
    if max_model_len is None:
        if supported is None:
            raise UnsupportedModelError(
                f"cannot tell the context length of {name}; pass --max-model-len"
            )
        return supported
    if supported is not None and max_model_len > supported:
        raise ConfigError(
            f"max_model_len {max_model_len} exceeds the {supported} tokens {name} supports"
        )
    return max_model_len


def cpu_budget(
    settings: Settings, weights_bytes: int, per_token: int, context: int
) -> tuple[int, str] | None:
    """The default KV budget on a CPU (None: free memory decides, as on a GPU or when the
    context or the cache size was given)."""
    if settings.max_model_len is not None or settings.kv_cache_tokens is not None:
        return None
    slots = settings.max_num_seqs or CPU_SLOTS
    floor = slots * min(context, CPU_MIN_SLOT_TOKENS) * per_token
    cap = max(CPU_KV_PER_WEIGHT * weights_bytes, floor)
    free, source = available_memory(CPU)
    if free <= cap:
        return free, source
    return cap, (
        f"the CPU default of {CPU_KV_PER_WEIGHT}x the {weights_bytes / MIB:.0f} MiB of weights "
        f"(at least {slots} x {min(context, CPU_MIN_SLOT_TOKENS)} tokens; "
        "--max-model-len or --kv-cache-tokens for more)"
    )


def prompt_cache_mib(plan: KVPlan) -> int:
    """llama.cpp's host-memory prompt cache (slot states kept when a slot is reused, for a
    conversation's next turn): one slot's context, not llama.cpp's default 8 GiB."""
    return max(1, -(-plan.max_seq_len * plan.bytes_per_token // MIB))


def server_params(path: Path, plan: KVPlan, settings: Settings, layers: int, api_key: str) -> Any:
    """llama.cpp's settings for r1serve's plan: n_parallel slots of max_seq_len tokens each."""
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = plan.max_slots
    params.n_ctx = plan.max_slots * plan.max_seq_len
    params.kv_unified = False  # each slot owns its share: a request never runs out mid-stream
    params.ctx_shift = False  # never drop context silently; r1serve bounds max_tokens instead
    params.cont_batching = True
    params.cache_prompt = True
    params.cache_ram_mib = prompt_cache_mib(plan)
    params.n_predict = -1
    if settings.max_prefill_tokens is not None:
        params.n_batch = settings.max_prefill_tokens
        params.n_ubatch = min(params.n_ubatch, settings.max_prefill_tokens)
    if settings.threads is not None:
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
    params.n_gpu_layers = layers
    params.fit_params = layers < 0  # let llama.cpp fit "all" layers into free GPU memory
    kv_type = {
        "f16": xllamacpp.ggml_type.GGML_TYPE_F16,
        "q8_0": xllamacpp.ggml_type.GGML_TYPE_Q8_0,
        "q4_0": xllamacpp.ggml_type.GGML_TYPE_Q4_0,
    }[settings.kv_cache_dtype]
    params.cache_type_k = kv_type
    params.cache_type_v = kv_type
    if settings.kv_cache_dtype != "f16":
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED
    params.warmup = False
    # The listener xllamacpp opens: loopback, any free port, only with the key.
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = [api_key]
    params.n_threads_http = 1
    params.endpoint_metrics = False
    params.endpoint_slots = False
    params.ui = False
    return params


def build_llamacpp(settings: Settings, source: ModelSource) -> BuiltEngine:
    """Read ``source`` (a .gguf) and start llama.cpp on it (generation starts with the engine)."""
    if source.kind != "gguf":
        raise ConfigError(f"--engine llamacpp serves .gguf files; {source.name} is a {source.kind}")
    started = time.perf_counter()
    path = source.file
    meta = read_gguf_metadata(path)
    shape = GGUFShape.from_metadata(meta, source.name)
    built = build_gguf_tokenizer(path, meta)
    template = built.chat_template
    if settings.chat_template is not None:
        try:
            template = settings.chat_template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read chat template {settings.chat_template}: {exc}") from exc
    if template is None:
        raise ConfigError(
            f"model {source.name} has no chat template; pass one with --chat-template"
        )
    compile_template(template)
    backend = built.tokenizer
    eos_meta = meta.get("tokenizer.ggml.eos_token_id")
    turn_ends = {backend.token_to_id(t) for t in _TURN_END_TOKENS if t in template}
    extra = {i for i in turn_ends if i is not None} | (
        {int(eos_meta)} if eos_meta is not None else set()
    )
    tokenizer = HFTokenizer(
        backend,
        bos_token=built.bos_token,
        eos_token=built.eos_token,
        extra_eos_token_ids=extra,
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
    )
    if not tokenizer.eos_token_ids:
        raise UnsupportedModelError(f"model {source.name} declares no end-of-sequence token")
    context = context_length(shape, settings.max_model_len, source.name)
    gpu = has_gpu()
    layers = gpu_layers(settings, gpu)
    per_token, formula = shape.bytes_per_token(settings.kv_cache_dtype)
    device = CPU
    if gpu and layers != 0:
        import torch  # a GPU build of the binding: free memory from CUDA, where torch sees it

        if torch.cuda.is_available():
            device = torch.device("cuda")
    budget = (
        cpu_budget(settings, path.stat().st_size, per_token, context)
        if device.type == "cpu"
        else None
    )
    plan = plan_kv(
        per_token=per_token,
        formula=formula,
        context_length=context,
        device=device,
        max_slots=settings.max_num_seqs or (None if gpu and layers != 0 else CPU_SLOTS),
        kv_cache_tokens=settings.kv_cache_tokens,
        budget=budget,
    )
    api_key = secrets.token_urlsafe(32)
    server = xllamacpp.Server(server_params(path, plan, settings, layers, api_key))
    del api_key  # the server holds it; r1serve never needs it again
    engine = LlamaCppEngine(
        server=server,
        tokenizer=tokenizer,
        chat=ChatFormatter(
            template, tokenizer, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token
        ),
        model_name=settings.served_model_name or source.name,
        slots=plan.max_slots,
        slot_tokens=plan.max_seq_len,
        model_context_length=context,
        eos_token_ids=tokenizer.eos_token_ids,
        max_waiting=settings.max_waiting
        if settings.max_waiting is not None
        else 4 * plan.max_slots,
        listening_address=server.listening_address,
        pieces=TokenPieces.from_gguf(meta),
    )
    seconds = time.perf_counter() - started
    summary = (
        f"model {engine.model_name} from {path} (llama.cpp {xllamacpp.__version__}, "
        f"KV {settings.kv_cache_dtype}, GPU layers {'all that fit' if layers < 0 else layers}, "
        f"context {context}, loaded in {seconds:.1f} s)",
        f"{plan.derivation}; prompt cache in RAM up to {prompt_cache_mib(plan)} MiB",
    )
    return BuiltEngine(engine, source, summary)
