"""A batched decoder for Llama-family models (Llama, Qwen2, Qwen3, Mistral) with slot KV cache.

The weights and modules come from the transformers model as loaded (any dtype, device map or
quantized Linear); this module only replaces the attention/cache path so that sequences of
different lengths decode together in one forward pass. The KV cache is one tensor per layer,
``[slots, kv_heads, max_seq_len, head_dim]``; active slots are kept packed in rows ``0..n-1``
(a finishing sequence's row is filled by the last row), so a decode step reads a plain slice.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from r1serve.engine.transformers.runner import DecodeInput, KVLayout, PrefillChunk

SUPPORTED_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})
MIN_REUSE = 4  # shorter shared prefixes are not worth a copy


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the native decoder cannot run ``model`` (None when it can)."""
    config: Any = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_TYPES:
        return f"architecture {model_type!r} is not one of {sorted(SUPPORTED_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", window is not None) and window:
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "unexpected module layout"
    return None


class _Projection:
    """One or more Linear layers on the same input, as one matmul when they are plain.

    On CPU the weights are stored transposed (``[in, out]``): MKL's NN GEMM is about 1.5x
    faster than the NT form ``F.linear`` uses at the small batch sizes of decoding. The
    modules keep working on views of the same storage, so there is no second copy.
    """

    def __init__(self, modules: Sequence[Any], *, transpose: bool) -> None:
        self.sizes = [int(m.out_features) for m in modules]
        self.modules = list(modules)
        self.weight: torch.Tensor | None = None  # [in, out] when transposed, else [out, in]
        self.transposed = transpose
        self.bias: torch.Tensor | None = None
        plain = all(type(m) is nn.Linear for m in modules)
        if not plain or len({(m.weight.dtype, m.weight.device) for m in modules}) != 1:
            return
        if len(modules) == 1 and not transpose:
            return  # nothing to gain: call the module
        biases = [m.bias for m in modules]
        if any(b is None for b in biases) and any(b is not None for b in biases):
            return  # mixed biases: keep calling the modules
        if biases[0] is not None:
            self.bias = torch.cat([b.detach() for b in biases])
        if transpose:
            fused = torch.cat([m.weight.detach().t() for m in modules], dim=1).contiguous()
        else:
            fused = torch.cat([m.weight.detach() for m in modules])
        offset = 0
        for m, size in zip(modules, self.sizes, strict=True):
            part = fused[:, offset : offset + size] if transpose else fused[offset : offset + size]
            m.weight.data = part.t() if transpose else part
            if self.bias is not None:
                m.bias.data = self.bias[offset : offset + size]
            offset += size
        self.weight = fused

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.weight is None:
            return [m(x) for m in self.modules]
        if self.transposed:
            flat = x.reshape(-1, x.shape[-1])  # [N, in]
            if self.bias is not None:
                out = torch.addmm(self.bias, flat, self.weight)
            else:
                out = torch.mm(flat, self.weight)
            out = out.view(*x.shape[:-1], out.shape[-1])
        else:
            out = F.linear(x, self.weight, self.bias)
        return list(out.split(self.sizes, dim=-1)) if len(self.sizes) > 1 else [out]


def _rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
    weight: torch.Tensor = norm.weight
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    # As transformers does for half precision: normalize in fp32, scale in the input dtype.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@dataclass
class _Layer:
    norm1: Any
    norm2: Any
    qkv: _Projection
    o_proj: _Projection
    gate_up: _Projection
    down: _Projection
    q_norm: Any | None
    k_norm: Any | None
    device: torch.device
    k_cache: torch.Tensor  # [S, KV, L, D]
    v_cache: torch.Tensor  # [S, KV, L, D]


def _zeroed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero tensor; on CPU backed by anonymous mmap so pages cost RAM only once written."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    buffer = mmap.mmap(-1, max(nbytes, 1))
    return torch.frombuffer(buffer, dtype=dtype, count=torch.Size(shape).numel()).view(shape)


class NativeRunner:
    """ModelRunner for Llama-family models: packed rows, chunked prefill, batched decode."""

    def __init__(
        self,
        model: nn.Module,
        *,
        max_slots: int,
        max_seq_len: int,
        derivation: str,
        prefix_caching: bool = True,
    ):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"native runner: {reason}")
        config: Any = model.config
        inner: Any = model.model
        self.model = model
        self.embed: Any
        self.config = config
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.n_heads)
        self.embed = inner.embed_tokens
        self.final_norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head: Any = model.lm_head
        self.device = self.embed.weight.device
        self.dtype = self.embed.weight.dtype
        shape = (max_slots, self.n_kv, max_seq_len, self.head_dim)
        cpu = self.device.type == "cpu"
        self.head = _Projection([self.lm_head], transpose=cpu)
        self.layers: list[_Layer] = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            device = layer.input_layernorm.weight.device
            self.layers.append(
                _Layer(
                    norm1=layer.input_layernorm,
                    norm2=layer.post_attention_layernorm,
                    qkv=_Projection([attn.q_proj, attn.k_proj, attn.v_proj], transpose=cpu),
                    o_proj=_Projection([attn.o_proj], transpose=cpu),
                    gate_up=_Projection([mlp.gate_proj, mlp.up_proj], transpose=cpu),
                    down=_Projection([mlp.down_proj], transpose=cpu),
                    q_norm=getattr(attn, "q_norm", None),
                    k_norm=getattr(attn, "k_norm", None),
                    device=device,
                    k_cache=_zeroed(shape, self.dtype, device),
                    v_cache=_zeroed(shape, self.dtype, device),
                )
            )
        per_token = 2 * len(self.layers) * self.n_kv * self.head_dim * self.dtype.itemsize
        self._kv = KVLayout(max_slots, max_seq_len, per_token, derivation)
        self._row_of: dict[int, int] = {}  # slot id -> row
        self._slot_at: list[int] = []  # row -> slot id
        self._length = [0] * max_slots  # tokens cached per row
        self._tokens: list[list[int]] = [[] for _ in range(max_slots)]  # what those tokens are
        self.prefix_caching = prefix_caching
        self.reused_tokens = 0  # prompt tokens served from cached prefixes (for metrics)
        self._next_slot = 0
        self._free_ids: list[int] = []

    @property
    def vocab_size(self) -> int:
        return int(self.head.sizes[0])

    @property
    def kv(self) -> KVLayout:
        return self._kv

    # ---- slots --------------------------------------------------------------------------

    def acquire(self) -> int:
        if len(self._slot_at) >= self._kv.max_slots:
            raise RuntimeError("no free KV slot")
        slot = self._free_ids.pop() if self._free_ids else self._next_slot
        if slot == self._next_slot:
            self._next_slot += 1
        row = len(self._slot_at)
        self._slot_at.append(slot)
        self._row_of[slot] = row
        if not self.prefix_caching:
            self._length[row] = 0
            self._tokens[row] = []
        return slot

    def release(self, slot: int) -> None:
        row = self._row_of.pop(slot)
        last = len(self._slot_at) - 1
        if row != last:  # keep rows packed: the last active row moves into the hole
            if self.prefix_caching:
                self._swap_rows(row, last)  # the finished cache stays, as the first free row
            else:
                self._copy_prefix(last, row, self._length[last])
                self._length[row], self._tokens[row] = self._length[last], self._tokens[last]
            moved = self._slot_at[last]
            self._slot_at[row] = moved
            self._row_of[moved] = row
        self._slot_at.pop()
        if not self.prefix_caching:
            self._length[last], self._tokens[last] = 0, []
        self._free_ids.append(slot)

    def reuse_prefix(self, slot: int, prompt: Sequence[int]) -> int:
        """Copy the longest cached prefix of ``prompt`` into the slot; its length in tokens.

        Any row may hold it: a running sequence, or a finished one whose cache is still in a
        free row. At least the prompt's last token is left to compute (its logits are needed).
        """
        row = self._row_of[slot]
        if not self.prefix_caching:
            return 0
        limit = len(prompt) - 1
        best_row, best = row, 0
        for r in range(self._kv.max_slots):
            tokens = self._tokens[r]
            if not tokens or tokens[0] != prompt[0]:
                continue
            n = _common_prefix(tokens, prompt, min(limit, self._length[r]))
            if n > best:
                best_row, best = r, n
        if best < MIN_REUSE:
            best = 0
        elif best_row != row:
            self._copy_prefix(best_row, row, best)
        self._length[row] = best
        self._tokens[row] = list(prompt[:best])
        self.reused_tokens += best
        return best

    def _copy_prefix(self, src: int, dst: int, n: int) -> None:
        for layer in self.layers:
            layer.k_cache[dst, :, :n] = layer.k_cache[src, :, :n]
            layer.v_cache[dst, :, :n] = layer.v_cache[src, :, :n]

    def _swap_rows(self, a: int, b: int) -> None:
        la, lb = self._length[a], self._length[b]
        for layer in self.layers:
            for cache in (layer.k_cache, layer.v_cache):
                kept = cache[a, :, :la].clone()
                cache[a, :, :lb] = cache[b, :, :lb]
                cache[b, :, :la] = kept
        self._length[a], self._length[b] = lb, la
        self._tokens[a], self._tokens[b] = self._tokens[b], self._tokens[a]

    # ---- forward passes -----------------------------------------------------------------

    def decode(self, inputs: Sequence[DecodeInput]) -> torch.Tensor:
        rows = [self._row_of[i.slot] for i in inputs]
        n = max(rows) + 1
        tokens = [0] * n
        positions = [min(self._length[r], self._kv.max_seq_len - 1) for r in range(n)]
        for inp, row in zip(inputs, rows, strict=True):
            tokens[row] = inp.token_id
            positions[row] = inp.position
        pos = torch.tensor(positions, device=self.device)  # [n]
        ids = torch.tensor(tokens, device=self.device).unsqueeze(1)  # [n, 1]
        key_len = max(positions) + 1
        visible = torch.arange(key_len, device=self.device)[None, :] <= pos[:, None]  # [n, K]
        # An additive mask: with one query per row, SDPA's fast path takes it as it is.
        mask = torch.zeros(n, 1, 1, key_len, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~visible[:, None, None, :], float("-inf"))
        hidden = self._forward(ids, pos.unsqueeze(1), mask, n, key_len)
        for inp, row in zip(inputs, rows, strict=True):
            self._length[row] = inp.position + 1
            tokens = self._tokens[row]
            del tokens[inp.position :]
            tokens.append(inp.token_id)
        logits = self._logits(hidden[:, -1])  # [n, V]
        if rows != list(range(n)):
            logits = logits[torch.tensor(rows, device=logits.device)]
        return logits

    def prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        rows = [self._row_of[c.slot] for c in chunks]
        lengths = [len(c.token_ids) for c in chunks]
        t_max = max(lengths)
        ids = torch.zeros(len(chunks), t_max, dtype=torch.long)  # [m, T]
        pos = torch.zeros(len(chunks), t_max, dtype=torch.long)  # [m, T]
        for i, c in enumerate(chunks):
            ids[i, : lengths[i]] = torch.tensor(list(c.token_ids))
            pos[i] = torch.arange(c.start, c.start + t_max).clamp_max(self._kv.max_seq_len - 1)
        key_len = max(c.start + n for c, n in zip(chunks, lengths, strict=True))
        keys = torch.arange(key_len)
        # A query sees keys up to its own position; padded queries see key 0 only.
        mask = keys[None, None, :] <= pos[:, :, None]  # [m, T, K]
        for i, n in enumerate(lengths):
            mask[i, n:] = keys[None, :] == 0
        ids, pos, mask = ids.to(self.device), pos.to(self.device), mask.to(self.device)
        hidden = self._forward(ids, pos, mask[:, None], rows, key_len, lengths, chunks)
        for c, row, n in zip(chunks, rows, lengths, strict=True):
            self._length[row] = c.start + n
            tokens = self._tokens[row]
            del tokens[c.start :]
            tokens.extend(c.token_ids)
        last = hidden[torch.arange(len(chunks)), torch.tensor(lengths) - 1]  # [m, hidden]
        return self._logits(last)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.final_norm.weight.device)
        return self.head(_rms(hidden, self.final_norm))[0].float()

    def _forward(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor,
        rows: int | list[int],
        key_len: int,
        lengths: list[int] | None = None,
        chunks: Sequence[PrefillChunk] | None = None,
    ) -> torch.Tensor:
        """Run all layers. ``rows`` is n for a decode over rows 0..n-1, else prefill rows."""
        x = self.embed(ids)  # [B, T, hidden]
        cos, sin = self.rotary(x, pos)  # [B, T, D]
        on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        b, t = ids.shape
        for layer in self.layers:
            dev = layer.device
            if dev not in on_device:
                on_device[dev] = (
                    cos.to(dev)[:, None],
                    sin.to(dev)[:, None],
                    mask.to(dev),
                    pos.to(dev),
                )
            c, s, m, p = on_device[dev]
            x = x.to(dev)
            h = _rms(x, layer.norm1)
            q, k, v = layer.qkv(h)
            q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # [B, KV, T, D]
            v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
            if layer.q_norm is not None and layer.k_norm is not None:
                q, k = _rms(q, layer.q_norm), _rms(k, layer.k_norm)
            q, k = _rotate(q, c, s), _rotate(k, c, s)
            if isinstance(rows, int):  # decode: one token per row, rows 0..n-1
                row_idx = torch.arange(rows, device=dev)
                layer.k_cache[row_idx, :, p[:, 0]] = k[:, :, 0]
                layer.v_cache[row_idx, :, p[:, 0]] = v[:, :, 0]
                keys = layer.k_cache[:rows, :, :key_len]
                values = layer.v_cache[:rows, :, :key_len]
            else:
                assert lengths is not None and chunks is not None
                for i, (row, n, chunk) in enumerate(zip(rows, lengths, chunks, strict=True)):
                    layer.k_cache[row, :, chunk.start : chunk.start + n] = k[i, :, :n]
                    layer.v_cache[row, :, chunk.start : chunk.start + n] = v[i, :, :n]
                if len(rows) == 1:
                    keys = layer.k_cache[rows[0] : rows[0] + 1, :, :key_len]
                    values = layer.v_cache[rows[0] : rows[0] + 1, :, :key_len]
                else:
                    index = torch.tensor(rows, device=dev)
                    keys = layer.k_cache[:, :, :key_len].index_select(0, index)
                    values = layer.v_cache[:, :, :key_len].index_select(0, index)
            if t == 1:
                # One query per row: fold each KV head's query group into the query axis
                # ([B, KV, G, D]), cheaper than enable_gqa broadcasting. # [B, H, 1, D] out
                groups = self.n_heads // self.n_kv
                folded = q.reshape(b, self.n_kv, groups, self.head_dim)
                o = F.scaled_dot_product_attention(folded, keys, values, attn_mask=m)
                o = o.reshape(b, self.n_heads, 1, self.head_dim)
            else:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=m, enable_gqa=True)
            x = x + layer.o_proj(o.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))[0]
            h = _rms(x, layer.norm2)
            gate, up = layer.gate_up(h)
            x = x + layer.down(F.silu(gate) * up)[0]
        return x
