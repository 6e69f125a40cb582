"""Parameter counts and memory needs computed from a model's real architecture.

The counts follow the weight shapes that transformers builds for each family (embedding,
attention projections with or without biases, gated MLP, RMSNorm weights, routed and shared
experts, DeepSeek's multi-head latent attention), so they match the published totals rather
than a rule of thumb. Memory is weights at a precision, plus the KV cache for a context length,
plus a fixed runtime allowance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from r1serve.errors import UnsupportedModelError

Precision = Literal["bf16", "int8", "int4"]
PRECISIONS: tuple[Precision, ...] = ("bf16", "int8", "int4")

# Quantized formats store a scale per block of weights: Q8_0 and Q4_0 (GGUF) keep one fp16
# scale per 32 weights, so they cost 8.5 and 4.5 bits per weight; GPTQ/AWQ at group size 128
# land close to the same figure.
BITS_PER_WEIGHT: Mapping[Precision, float] = {"bf16": 16.0, "int8": 8.5, "int4": 4.5}

# The KV cache stays in 16-bit floats whatever the weights are quantized to.
KV_BYTES_PER_VALUE = 2

# CUDA context, activations of one forward pass and allocator slack: what a process needs on
# top of weights and KV cache before it can serve a request.
RUNTIME_OVERHEAD_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class MixtureOfExperts:
    """Expert layout of a mixture-of-experts model."""

    routed_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    shared_experts: int = 0
    shared_intermediate_size: int = 0  # of all shared experts together
    dense_layers: int = 0  # leading layers with a plain MLP (DeepSeek's first_k_dense_replace)
    dense_intermediate_size: int = 0
    router_bias: bool = False  # DeepSeek-V3's per-expert score correction
    shared_expert_gate: bool = False  # Qwen-MoE gates the shared expert with one scalar


@dataclass(frozen=True, slots=True)
class LatentAttention:
    """DeepSeek's multi-head latent attention (MLA): keys and values go through a low rank."""

    q_lora_rank: int | None  # None: queries are projected directly
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True, slots=True)
class Architecture:
    """The shape of a decoder-only transformer, enough to count its weights and KV cache."""

    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    max_context: int | None = None
    moe: MixtureOfExperts | None = None
    latent_attention: LatentAttention | None = None


@dataclass(frozen=True, slots=True)
class ParameterCount:
    """Weights stored (``total``) and weights used for one token (``active``, less for MoE)."""

    total: int
    active: int


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Memory a model needs: weights per precision, KV cache per token, at ``context`` tokens."""

    parameters: ParameterCount
    weight_bytes: Mapping[Precision, int]
    kv_bytes_per_token: int
    context: int

    @property
    def kv_bytes_per_1k_tokens(self) -> int:
        """KV cache for 1,000 tokens."""
        return self.kv_bytes_per_token * 1000

    @property
    def kv_bytes_at_context(self) -> int:
        """KV cache for the whole chosen context."""
        return self.kv_bytes_per_token * self.context

    def total_bytes(self, precision: Precision) -> int:
        """Weights, KV cache at the chosen context and the runtime allowance."""
        return self.weight_bytes[precision] + self.kv_bytes_at_context + RUNTIME_OVERHEAD_BYTES


def _int(config: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UnsupportedModelError(f"config.json: {key} must be a non-negative integer")
            return value
    if default is None:
        raise UnsupportedModelError(f"config.json has no {keys[0]}; cannot size this model")
    return default


def _moe_from_config(config: Mapping[str, Any], model_type: str) -> MixtureOfExperts | None:
    routed = _int(config, "n_routed_experts", "num_local_experts", "num_experts", default=0)
    if routed <= 1:
        return None
    if model_type.startswith("deepseek"):
        return MixtureOfExperts(
            routed_experts=routed,
            experts_per_token=_int(config, "num_experts_per_tok"),
            expert_intermediate_size=_int(config, "moe_intermediate_size"),
            shared_experts=_int(config, "n_shared_experts", default=0),
            shared_intermediate_size=_int(config, "n_shared_experts", default=0)
            * _int(config, "moe_intermediate_size"),
            dense_layers=_int(config, "first_k_dense_replace", default=0),
            dense_intermediate_size=_int(config, "intermediate_size"),
            router_bias=config.get("topk_method") == "noaux_tc",
        )
    shared_size = _int(config, "shared_expert_intermediate_size", default=0)
    return MixtureOfExperts(
        routed_experts=routed,
        experts_per_token=_int(config, "num_experts_per_tok", "num_experts_per_token"),
        # Mixtral names the expert width intermediate_size; Qwen-MoE uses moe_intermediate_size.
        expert_intermediate_size=_int(config, "moe_intermediate_size", "intermediate_size"),
        shared_experts=1 if shared_size else 0,
        shared_intermediate_size=shared_size,
        shared_expert_gate=shared_size > 0,
    )


def _latent_attention_from_config(config: Mapping[str, Any]) -> LatentAttention | None:
    if config.get("kv_lora_rank") is None:
        return None
    q_rank = config.get("q_lora_rank")
    return LatentAttention(
        q_lora_rank=_int(config, "q_lora_rank") if q_rank is not None else None,
        kv_lora_rank=_int(config, "kv_lora_rank"),
        qk_nope_head_dim=_int(config, "qk_nope_head_dim"),
        qk_rope_head_dim=_int(config, "qk_rope_head_dim"),
        v_head_dim=_int(config, "v_head_dim"),
    )


def architecture_from_hf_config(config: Mapping[str, Any]) -> Architecture:
    """Read the architecture from a Hugging Face ``config.json`` (already parsed)."""
    text_config = config.get("text_config")
    if isinstance(text_config, Mapping):  # multimodal wrappers keep the LM in text_config
        config = {**text_config, "model_type": text_config.get("model_type", "")}
    model_type = str(config.get("model_type") or "")
    hidden = _int(config, "hidden_size", "n_embd", "d_model")
    heads = _int(config, "num_attention_heads", "n_head")
    if heads == 0:
        raise UnsupportedModelError("config.json: num_attention_heads is 0")
    # Qwen2 always has q/k/v biases; Llama-style configs say so with attention_bias.
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    return Architecture(
        model_type=model_type,
        num_layers=_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=hidden,
        intermediate_size=_int(config, "intermediate_size", "n_inner", "ffn_hidden_size"),
        num_attention_heads=heads,
        num_kv_heads=_int(config, "num_key_value_heads", default=heads),
        head_dim=_int(config, "head_dim", default=hidden // heads),
        vocab_size=_int(config, "vocab_size"),
        # transformers' default for tie_word_embeddings is True when a config omits it.
        tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        qkv_bias=qkv_bias,
        o_bias=bool(config.get("attention_bias", False)) and model_type != "qwen2",
        mlp_bias=bool(config.get("mlp_bias", False)),
        qk_norm=model_type.startswith(("qwen3", "olmo2", "gemma3")),
        max_context=config.get("max_position_embeddings"),
        moe=_moe_from_config(config, model_type),
        latent_attention=_latent_attention_from_config(config),
    )


def _attention_parameters(arch: Architecture) -> int:
    hidden, heads = arch.hidden_size, arch.num_attention_heads
    mla = arch.latent_attention
    if mla is not None:
        qk_head = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank is None:
            query = hidden * heads * qk_head
        else:  # down-projection, its RMSNorm, up-projection
            query = hidden * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * heads * qk_head
        key_value = (
            hidden * (mla.kv_lora_rank + mla.qk_rope_head_dim)  # compressed KV plus rope key
            + mla.kv_lora_rank  # its RMSNorm
            + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim)
        )
        return query + key_value + heads * mla.v_head_dim * hidden
    q_width = heads * arch.head_dim
    kv_width = arch.num_kv_heads * arch.head_dim
    weights = hidden * q_width + 2 * hidden * kv_width + q_width * hidden
    biases = (q_width + 2 * kv_width if arch.qkv_bias else 0) + (hidden if arch.o_bias else 0)
    norms = 2 * arch.head_dim if arch.qk_norm else 0
    return weights + biases + norms


def _gated_mlp_parameters(hidden: int, intermediate: int, bias: bool) -> int:
    # gate, up (hidden -> intermediate) and down (intermediate -> hidden)
    return 3 * hidden * intermediate + ((2 * intermediate + hidden) if bias else 0)


def count_parameters(arch: Architecture) -> ParameterCount:
    """Total and per-token active weights of ``arch``."""
    hidden = arch.hidden_size
    per_layer_fixed = _attention_parameters(arch) + 2 * hidden  # plus two RMSNorms
    embeddings = arch.vocab_size * hidden * (1 if arch.tie_word_embeddings else 2)
    total = embeddings + hidden + arch.num_layers * per_layer_fixed  # + final norm
    moe = arch.moe
    if moe is None:
        mlp = _gated_mlp_parameters(hidden, arch.intermediate_size, arch.mlp_bias)
        total += arch.num_layers * mlp
        return ParameterCount(total=total, active=total)
    dense_mlp = _gated_mlp_parameters(hidden, moe.dense_intermediate_size, arch.mlp_bias)
    expert = _gated_mlp_parameters(hidden, moe.expert_intermediate_size, False)
    shared = _gated_mlp_parameters(hidden, moe.shared_intermediate_size, False)
    router = hidden * moe.routed_experts + (moe.routed_experts if moe.router_bias else 0)
    router += hidden if moe.shared_expert_gate else 0
    moe_layers = arch.num_layers - moe.dense_layers
    total += moe.dense_layers * dense_mlp
    total += moe_layers * (moe.routed_experts * expert + shared + router)
    idle_experts = moe.routed_experts - moe.experts_per_token
    return ParameterCount(total=total, active=total - moe_layers * idle_experts * expert)


def kv_cache_bytes_per_token(arch: Architecture, bytes_per_value: int = KV_BYTES_PER_VALUE) -> int:
    """KV cache one token occupies across all layers."""
    mla = arch.latent_attention
    if mla is not None:
        # MLA caches the compressed latent and the shared rope key, not per-head K and V.
        values_per_layer = mla.kv_lora_rank + mla.qk_rope_head_dim
    else:
        values_per_layer = 2 * arch.num_kv_heads * arch.head_dim  # K and V
    return arch.num_layers * values_per_layer * bytes_per_value


def weight_bytes(parameters: int, precision: Precision) -> int:
    """Bytes of ``parameters`` weights stored at ``precision``."""
    return int(parameters * BITS_PER_WEIGHT[precision] / 8)


def memory_estimate(
    parameters: ParameterCount, kv_bytes_per_token: int, context: int
) -> MemoryEstimate:
    """Weights of ``parameters`` at each precision and KV cache for ``context`` tokens."""
    if context <= 0:
        raise ValueError("context must be a positive number of tokens")
    return MemoryEstimate(
        parameters=parameters,
        weight_bytes={p: weight_bytes(parameters.total, p) for p in PRECISIONS},
        kv_bytes_per_token=kv_bytes_per_token,
        context=context,
    )


def estimate_memory(arch: Architecture, context: int) -> MemoryEstimate:
    """Memory ``arch`` needs at each precision with ``context`` tokens of KV cache."""
    return memory_estimate(count_parameters(arch), kv_cache_bytes_per_token(arch), context)
