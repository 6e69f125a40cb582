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

from r1serve.engine.runner import DecodeInput, KVLayout, PrefillChunk

SUPPORTED_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})


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
    """Several Linear layers on one input, fused into one matmul when they are plain."""

    def __init__(self, modules: Sequence[Any]) -> None:
        self.sizes = [int(m.out_features) for m in modules]
        self.modules = list(modules)
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        plain = len(modules) > 1 and all(type(m) is nn.Linear for m in modules)
        if not plain or len({(m.weight.dtype, m.weight.device) for m in modules}) != 1:
            return
        biases = [m.bias for m in modules]
        if any(b is None for b in biases) and any(b is not None for b in biases):
            return  # mixed biases: keep calling the modules
        fused = torch.cat([m.weight.detach() for m in modules])
        if biases[0] is not None:
            self.bias = torch.cat([b.detach() for b in biases])
        # The modules keep working on views of the fused tensor: no second copy in memory.
        offset = 0
        for m, size in zip(modules, self.sizes, strict=True):
            m.weight.data = fused[offset : offset + size]
            if self.bias is not None:
                m.bias.data = self.bias[offset : offset + size]
            offset += size
        self.weight = fused

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.weight is not None:
            return list(F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1))
        return [m(x) for m in self.modules]


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
    o_proj: Any
    gate_up: _Projection
    down: Any
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

    def __init__(self, model: nn.Module, *, max_slots: int, max_seq_len: int, derivation: str):
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
        self.layers: list[_Layer] = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            device = layer.input_layernorm.weight.device
            self.layers.append(
                _Layer(
                    norm1=layer.input_layernorm,
                    norm2=layer.post_attention_layernorm,
                    qkv=_Projection([attn.q_proj, attn.k_proj, attn.v_proj]),
                    o_proj=attn.o_proj,
                    gate_up=_Projection([mlp.gate_proj, mlp.up_proj]),
                    down=mlp.down_proj,
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
        self._next_slot = 0
        self._free_ids: list[int] = []

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.weight.shape[0])

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
        self._length[row] = 0
        return slot

    def release(self, slot: int) -> None:
        row = self._row_of.pop(slot)
        last = len(self._slot_at) - 1
        if row != last:  # keep rows packed: move the last row into the hole
            n = self._length[last]
            for layer in self.layers:
                layer.k_cache[row, :, :n] = layer.k_cache[last, :, :n]
                layer.v_cache[row, :, :n] = layer.v_cache[last, :, :n]
            moved = self._slot_at[last]
            self._slot_at[row] = moved
            self._row_of[moved] = row
            self._length[row] = n
        self._slot_at.pop()
        self._length[last] = 0
        self._free_ids.append(slot)

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
        mask = torch.arange(key_len, device=self.device)[None, :] <= pos[:, None]  # [n, K]
        hidden = self._forward(ids, pos.unsqueeze(1), mask[:, None, None, :], n, key_len)
        for inp, row in zip(inputs, rows, strict=True):
            self._length[row] = inp.position + 1
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
        last = hidden[torch.arange(len(chunks)), torch.tensor(lengths) - 1]  # [m, hidden]
        return self._logits(last)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.final_norm.weight.device)
        return self.lm_head(_rms(hidden, self.final_norm)).float()

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
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=m, enable_gqa=True)
            x = x + layer.o_proj(o.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))
            h = _rms(x, layer.norm2)
            gate, up = layer.gate_up(h)
            x = x + layer.down(F.silu(gate) * up)
        return x
