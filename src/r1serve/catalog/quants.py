"""GGUF quantizations and the memory the llama.cpp engine needs to serve one.

Weights are sized tensor by tensor as llama.cpp's ``llama-quantize`` assigns types
(``llama_tensor_get_type``): a K-quant "mix" such as Q4_K_M keeps most matrices at its base
type (Q4_K), gives the output head Q6_K (or the token embedding, when it is tied to the head),
and upgrades ``attn_v`` and ``ffn_down`` to Q6_K in the layers ``use_more_bits`` picks (the
first and last eighth, and every third layer between). A matrix whose rows are not a multiple
of the type's block (256 values for K-quants) falls back to a 32-value type, as llama.cpp does;
norms and biases stay float32. Bits per weight are those of the ggml block formats.

Memory is those weights, the KV cache in f16 for the context, and llama.cpp's runtime: on a
CPU a second copy of the tensors it repacks for its AVX2 kernels (Q4_0, Q4_K), its
compute buffer (measured: about ``3 x ffn + 5 x hidden`` floats per token of the 512-token
micro-batch, plus an f16 attention mask of micro-batch x context), the logits buffer, the
vocabulary tables, and the Python process with the binding loaded. See docs/models.md for the
measurements behind each constant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from r1serve.catalog.estimate import Architecture, kv_cache_bytes_per_token

# Bits per weight of each ggml block type (block bytes x 8 / values per block).
GGML_BITS: Mapping[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,  # 32 int8 + one f16 scale
    "Q6_K": 6.5625,  # 210 bytes per 256
    "Q5_K": 5.5,  # 176 bytes per 256
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K": 4.5,  # 144 bytes per 256
    "Q4_1": 5.0,
    "Q4_0": 4.5,
}
_BLOCK = {"Q6_K": 256, "Q5_K": 256, "Q4_K": 256}
# What llama.cpp uses when a row does not split into 256-value blocks.
_FALLBACK = {"Q6_K": "Q8_0", "Q5_K": "Q5_1", "Q4_K": "Q5_0"}


@dataclass(frozen=True, slots=True)
class GgufQuant:
    """A llama.cpp file type: base type, the upgraded layers' type, the output head's type."""

    name: str
    base: str
    more_bits: str | None  # attn_v / ffn_down in use_more_bits layers
    output: str


# Smallest first; the ones `r1serve models` shows and `pull NAME:QUANT` resolves.
GGUF_QUANTS: Mapping[str, GgufQuant] = {
    q.name: q
    for q in (
        GgufQuant("Q4_K_M", "Q4_K", "Q6_K", "Q6_K"),
        GgufQuant("Q5_K_M", "Q5_K", "Q6_K", "Q6_K"),
        GgufQuant("Q6_K", "Q6_K", None, "Q6_K"),
        GgufQuant("Q8_0", "Q8_0", None, "Q8_0"),
    )
}
SHOWN_QUANTS: tuple[str, ...] = ("Q4_K_M", "Q5_K_M", "Q8_0")
DEFAULT_QUANT = "Q4_K_M"  # the usual pick of GGUF publishers: near-Q8 quality at ~4.9 bpw

# llama.cpp's runtime, measured with xllamacpp 2026.10 on CPU (docs/models.md).
UBATCH_TOKENS = 512  # llama.cpp's default micro-batch; the compute buffer scales with it
BINDING_BYTES = 24 << 20  # Python with xllamacpp imported, before any model
VOCAB_BYTES_PER_TOKEN = 480  # token and merge tables, built by the loader and its fit probe
# On x86 CPUs llama.cpp repacks these types into interleaved rows (CPU_REPACK buffers) for its
# fast kernels; the mapped file pages it read them from stay resident as well, so they count
# twice (measured: the 1.5B Q4_K_M, docs/models.md). The token embedding is never repacked.
REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
# On a GPU the CUDA context and cuBLAS workspaces come on top (not measured here).
CUDA_CONTEXT_BYTES = 512 << 20


@dataclass(frozen=True, slots=True)
class Matrix:
    """One weight tensor as llama.cpp quantizes it."""

    kind: str  # "embed", "output", "attn_v", "ffn_down", "matrix" or "vector"
    layer: int  # -1 outside the blocks
    elements: int
    row: int  # values per row (the dimension blocks run along)


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of layers that get more bits in the _M mixes."""
    eighth = layers // 8
    return layer < eighth or layer >= 7 * layers // 8 or (layer - eighth) % 3 == 2


def _layer_matrices(arch: Architecture, layer: int) -> Iterator[Matrix]:
    hidden, head = arch.hidden_size, arch.head_dim
    mla = arch.latent_attention
    if mla is None:
        q, kv = arch.num_attention_heads * head, arch.num_kv_heads * head
        yield Matrix("matrix", layer, hidden * q, hidden)  # attn_q
        yield Matrix("matrix", layer, hidden * kv, hidden)  # attn_k
        yield Matrix("attn_v", layer, hidden * kv, hidden)
        yield Matrix("matrix", layer, q * hidden, q)  # attn_output
        biases = (q + 2 * kv if arch.qkv_bias else 0) + (hidden if arch.o_bias else 0)
        yield Matrix("vector", layer, biases, 1)
    else:  # MLA's tensors have other names, so llama.cpp gives none of them more bits
        heads = arch.num_attention_heads
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        rank = mla.q_lora_rank
        query = hidden * heads * qk if rank is None else hidden * rank + rank * heads * qk
        kv_a = hidden * (mla.kv_lora_rank + mla.qk_rope_head_dim)
        kv_b = mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim)
        for elements in (query, kv_a, kv_b, heads * mla.v_head_dim * hidden):
            yield Matrix("matrix", layer, elements, hidden)
    yield Matrix("vector", layer, 2 * hidden, 1)  # attention and MLP norms
    moe = arch.moe
    if moe is None or layer < moe.dense_layers:
        width = arch.intermediate_size if moe is None else moe.dense_intermediate_size
        yield Matrix("matrix", layer, 2 * hidden * width, hidden)  # gate, up
        yield Matrix("ffn_down", layer, width * hidden, width)
        return
    for count, width in (
        (moe.routed_experts, moe.expert_intermediate_size),
        (1, moe.shared_intermediate_size),
    ):
        if count and width:
            yield Matrix("matrix", layer, count * 2 * hidden * width, hidden)
            yield Matrix("ffn_down", layer, count * width * hidden, width)
    yield Matrix("vector", layer, hidden * moe.routed_experts, 1)  # the router stays F32


def gguf_matrices(arch: Architecture) -> list[Matrix]:
    """The tensors of ``arch`` as a GGUF stores them."""
    hidden = arch.hidden_size
    tied = arch.tie_word_embeddings
    # A tied embedding is the output head too, and llama.cpp quantizes it as the head.
    matrices = [Matrix("output" if tied else "embed", -1, arch.vocab_size * hidden, hidden)]
    if not tied:
        matrices.append(Matrix("output", -1, arch.vocab_size * hidden, hidden))
    matrices.append(Matrix("vector", -1, hidden, 1))  # final norm
    for layer in range(arch.num_layers):
        matrices.extend(_layer_matrices(arch, layer))
    return matrices


def tensor_type(quant: GgufQuant, matrix: Matrix, layers: int) -> str:
    """The ggml type llama-quantize gives ``matrix`` under ``quant``."""
    if matrix.kind == "vector":
        return "F32"
    chosen = quant.base
    if matrix.kind == "output":
        chosen = quant.output
    elif (
        matrix.kind in ("attn_v", "ffn_down")
        and quant.more_bits is not None
        and use_more_bits(matrix.layer, layers)
    ):
        chosen = quant.more_bits
    if matrix.row % _BLOCK.get(chosen, 32):
        chosen = _FALLBACK.get(chosen, chosen)
    return chosen


def gguf_weight_bytes(arch: Architecture, quant_name: str) -> int:
    """Bytes of the weights of ``arch`` in a GGUF quantized as ``quant_name``."""
    quant = GGUF_QUANTS[quant_name]
    bits = sum(
        m.elements * GGML_BITS[tensor_type(quant, m, arch.num_layers)] for m in gguf_matrices(arch)
    )
    return int(bits / 8)


def gguf_repacked_bytes(arch: Architecture, quant_name: str) -> int:
    """Bytes of the tensors llama.cpp repacks on a CPU, for ``arch`` as ``quant_name``."""
    quant = GGUF_QUANTS[quant_name]
    bits = 0.0
    for m in gguf_matrices(arch):
        kind = tensor_type(quant, m, arch.num_layers)
        if kind in REPACKED_TYPES and m.kind != "embed":
            bits += m.elements * GGML_BITS[kind]
    return int(bits / 8)


@dataclass(frozen=True, slots=True)
class LlamaCppMemory:
    """What the llama.cpp engine holds for one model at one context."""

    weight_bytes: int
    kv_bytes: int
    runtime_bytes: int
    context: int

    @property
    def total_bytes(self) -> int:
        """Weights + KV cache + runtime."""
        return self.weight_bytes + self.kv_bytes + self.runtime_bytes


def llamacpp_context(context: int) -> int:
    """The KV cells llama.cpp allocates for ``context`` tokens (it pads to 256)."""
    return -(-context // 256) * 256


def llamacpp_runtime_bytes(arch: Architecture, context: int, *, gpu: bool = False) -> int:
    """llama.cpp's compute and logits buffers, vocabulary and process, beside weights and KV."""
    width = arch.intermediate_size
    if arch.moe is not None:
        width = max(arch.moe.dense_intermediate_size, arch.moe.expert_intermediate_size)
    compute = UBATCH_TOKENS * 4 * (3 * width + 5 * arch.hidden_size)
    mask = UBATCH_TOKENS * 2 * llamacpp_context(context)  # f16 attention mask
    logits = arch.vocab_size * 4
    host = BINDING_BYTES + VOCAB_BYTES_PER_TOKEN * arch.vocab_size
    return compute + mask + logits + host + (CUDA_CONTEXT_BYTES if gpu else 0)


def llamacpp_memory(
    arch: Architecture,
    weight_bytes: int,
    context: int,
    *,
    gpu: bool = False,
    repacked_bytes: int = 0,
) -> LlamaCppMemory:
    """Memory the llama.cpp engine needs for ``weight_bytes`` of ``arch`` at ``context``.

    ``repacked_bytes``: weights the CPU backend copies into repacked buffers (none on a GPU).
    """
    if context <= 0:
        raise ValueError("context must be a positive number of tokens")
    kv = kv_cache_bytes_per_token(arch) * llamacpp_context(context)
    runtime = llamacpp_runtime_bytes(arch, context, gpu=gpu) + (0 if gpu else repacked_bytes)
    return LlamaCppMemory(weight_bytes, kv, runtime, context)


def quant_memory(
    arch: Architecture, quant_name: str, context: int, *, gpu: bool = False
) -> LlamaCppMemory:
    """Memory of ``arch`` quantized as ``quant_name`` on the llama.cpp engine."""
    weights = gguf_weight_bytes(arch, quant_name)
    repacked = gguf_repacked_bytes(arch, quant_name)
    return llamacpp_memory(arch, weights, context, gpu=gpu, repacked_bytes=repacked)
