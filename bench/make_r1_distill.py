"""Make a model with DeepSeek-R1-Distill-Qwen-1.5B's exact architecture and random weights.

Nothing is downloaded: the architecture is the catalog's (``models.json``, copied from the
model's ``config.json``), the tokenizer and chat template are tiny-r1's (the real R1-Distill
tokenizer). Written under ``bench/.cache/r1-distill-qwen-1.5b-random/``:

- ``hf/``: a Hugging Face folder, float32 safetensors shards, for the transformers engine;
- ``r1-distill-qwen-1.5b-random-Q8_0.gguf`` and ``...-Q4_K_M.gguf`` for llama.cpp: the same
  weights, written with the ``gguf`` package under llama.cpp's Qwen2 tensor names, typed
  tensor by tensor as ``llama-quantize`` does (r1serve.catalog.quants), quantized by
  ``gguf.quants`` (Q8_0) and by ggml's own ``ggml_quantize_chunk`` from the xllamacpp binding
  (K-quants), called through ctypes, so no llama.cpp build is needed.

Weights are normal(0, 0.02) from a fixed seed (norms 1, biases 0): outputs are meaningless,
but every matrix has the real shape, so speed and memory are those of the real model.

    python -m bench.make_r1_distill            # everything (~7 GB HF + 3 GB GGUF, a few minutes)
    python -m bench.make_r1_distill --layers 2 # a 2-layer variant of the same widths, for a smoke
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY_R1 = ROOT / "tests" / "fixtures" / "tiny-r1"
REPO_ID = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
SHARD_BYTES = 2 << 30
STD = 0.02


def distill_config(layers: int | None = None) -> dict[str, Any]:
    """R1-Distill-Qwen-1.5B's config.json (float32), from the catalog's stored values."""
    from r1serve.catalog.catalog import find_entry

    entry = find_entry(REPO_ID)
    assert entry is not None
    arch = entry.architecture
    config = json.loads((TINY_R1 / "hf" / "config.json").read_text())
    n_layers = layers or arch.num_layers
    config.update(
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=n_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_kv_heads,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
        max_position_embeddings=arch.max_context,
        max_window_layers=21,
        sliding_window=4096,
        use_sliding_window=False,
        rope_theta=10000.0,
        rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
        layer_types=["full_attention"] * n_layers,
        dtype="float32",
    )
    return config


def hf_tensors(config: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """Every weight of the HF model, in order, from a fixed seed."""
    rng = np.random.default_rng(1536)
    hidden, ff = config["hidden_size"], config["intermediate_size"]
    head = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head
    vocab = config["vocab_size"]

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * STD).astype(np.float32)

    yield "model.embed_tokens.weight", normal(vocab, hidden)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm.weight", np.ones(hidden, np.float32)
        yield f"{p}.self_attn.q_proj.weight", normal(hidden, hidden)
        yield f"{p}.self_attn.q_proj.bias", np.zeros(hidden, np.float32)
        yield f"{p}.self_attn.k_proj.weight", normal(kv, hidden)
        yield f"{p}.self_attn.k_proj.bias", np.zeros(kv, np.float32)
        yield f"{p}.self_attn.v_proj.weight", normal(kv, hidden)
        yield f"{p}.self_attn.v_proj.bias", np.zeros(kv, np.float32)
        yield f"{p}.self_attn.o_proj.weight", normal(hidden, hidden)
        yield f"{p}.post_attention_layernorm.weight", np.ones(hidden, np.float32)
        yield f"{p}.mlp.gate_proj.weight", normal(ff, hidden)
        yield f"{p}.mlp.up_proj.weight", normal(ff, hidden)
        yield f"{p}.mlp.down_proj.weight", normal(hidden, ff)
    yield "model.norm.weight", np.ones(hidden, np.float32)
    if not config["tie_word_embeddings"]:
        yield "lm_head.weight", normal(vocab, hidden)


def write_hf(config: dict[str, Any], out: Path) -> None:
    """The HF folder: config, tiny-r1's tokenizer files, float32 safetensors shards + index."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(TINY_R1 / "hf" / name, out / name)
    # Each shard is written as soon as it is full, so at most one shard is held in memory;
    # the names get the shard count once it is known.
    written: list[tuple[Path, list[str]]] = []
    shard: dict[str, np.ndarray] = {}
    size = total = 0

    def flush() -> None:
        path = out / f"shard-{len(written) + 1:05d}.tmp"
        save_file(shard, str(path), metadata={"format": "pt"})
        written.append((path, list(shard)))
        shard.clear()

    for name, tensor in hf_tensors(config):
        if size + tensor.nbytes > SHARD_BYTES and shard:
            flush()
            size = 0
        shard[name] = tensor
        size += tensor.nbytes
        total += tensor.nbytes
    flush()
    weight_map = {}
    for index, (path, names) in enumerate(written, 1):
        file = f"model-{index:05d}-of-{len(written):05d}.safetensors"
        path.rename(out / file)
        weight_map |= dict.fromkeys(names, file)
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2) + "\n")


def _gguf_name(hf_name: str) -> str:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    parts = hf_name.split(".")  # model.layers.{i}.{module}.{proj}.{weight|bias}
    layer, rest = parts[2], ".".join(parts[3:])
    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{layer}.{names[rest]}"


class GgmlQuantizer:
    """ggml's quantize functions from the xllamacpp binding's shared library."""

    def __init__(self) -> None:
        import xllamacpp.xllamacpp as native

        self._lib = ctypes.CDLL(native.__file__)
        self._lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self._lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
            ctypes.c_int64, ctypes.c_void_p,
        ]  # fmt: skip
        self._lib.ggml_quantize_init.argtypes = [ctypes.c_int]

    def quantize(self, tensor: np.ndarray, qtype: Any) -> np.ndarray:
        """``tensor`` [rows, n_per_row] float32 as ``qtype`` blocks, uint8 [rows, row bytes]."""
        from gguf import GGML_QUANT_SIZES

        rows, per_row = tensor.shape
        block, block_bytes = GGML_QUANT_SIZES[qtype]
        out = np.empty((rows, per_row // block * block_bytes), np.uint8)
        src = np.ascontiguousarray(tensor, np.float32)
        self._lib.ggml_quantize_init(int(qtype))
        written = self._lib.ggml_quantize_chunk(
            int(qtype), src.ctypes.data, out.ctypes.data, 0, rows, per_row, None
        )
        assert written == out.nbytes, (written, out.nbytes)
        return out


def _matrix_kind(gguf_name: str, tied: bool) -> str:
    if gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight"):
        return "output"
    if gguf_name == "token_embd.weight":
        return "embed"
    module = gguf_name.split(".")[-2]  # blk.N.attn_v.weight -> attn_v
    return module if module in ("attn_v", "ffn_down") else "matrix"


def _copy_tokenizer(writer: Any, vocab: int) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(TINY_R1 / "tiny-r1.gguf")

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    # tiny-r1 pads its vocabulary to 152,064 rows ([PADn] tokens); the 1.5B model has 151,936.
    writer.add_tokenizer_model(value("tokenizer.ggml.model"))
    writer.add_tokenizer_pre(value("tokenizer.ggml.pre"))
    writer.add_token_list(value("tokenizer.ggml.tokens")[:vocab])
    writer.add_token_types(value("tokenizer.ggml.token_type")[:vocab])
    writer.add_token_merges(value("tokenizer.ggml.merges"))
    writer.add_bos_token_id(value("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(value("tokenizer.ggml.eos_token_id"))
    writer.add_pad_token_id(value("tokenizer.ggml.padding_token_id"))
    writer.add_add_bos_token(value("tokenizer.ggml.add_bos_token"))
    writer.add_add_eos_token(value("tokenizer.ggml.add_eos_token"))
    writer.add_chat_template(value("tokenizer.chat_template"))


def write_gguf(config: dict[str, Any], hf_dir: Path, out: Path, quant_name: str) -> None:
    """One GGUF of the HF folder's weights, typed as llama-quantize types ``quant_name``."""
    import gguf
    from safetensors import safe_open

    from r1serve.catalog.quants import GGUF_QUANTS, Matrix, tensor_type

    quant = GGUF_QUANTS[quant_name]
    layers, tied = config["num_hidden_layers"], config["tie_word_embeddings"]
    writer = gguf.GGUFWriter(str(out), "qwen2")
    writer.add_name("DeepSeek-R1-Distill-Qwen-1.5B (random weights)")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    file_types = {
        "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "Q4_K_M": gguf.LlamaFileType.MOSTLY_Q4_K_M,
    }
    writer.add_file_type(int(file_types[quant_name]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _copy_tokenizer(writer, config["vocab_size"])
    ggml = GgmlQuantizer()
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    for hf_name, file in index["weight_map"].items():
        with safe_open(str(hf_dir / file), "np") as shard:
            tensor = shard.get_tensor(hf_name)
        name = _gguf_name(hf_name)
        if tensor.ndim == 1:
            writer.add_tensor(name, tensor.astype(np.float32))
            continue
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        matrix = Matrix(_matrix_kind(name, tied), layer, tensor.size, tensor.shape[1])
        qtype = gguf.GGMLQuantizationType[tensor_type(quant, matrix, layers)]
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            data = gguf.quants.quantize(tensor, qtype)
        else:
            data = ggml.quantize(tensor, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--layers", type=int, default=None, help="fewer layers, for a smoke")
    parser.add_argument("--quants", default="Q8_0,Q4_K_M")
    args = parser.parse_args()
    stem = "r1-distill-qwen-1.5b-random" + (f"-{args.layers}l" if args.layers else "")
    out = args.out or ROOT / "bench" / ".cache" / stem
    config = distill_config(args.layers)
    hf_dir = out / "hf"
    if not (hf_dir / "model.safetensors.index.json").is_file():
        write_hf(config, hf_dir)
    print(hf_dir)
    for quant in [q for q in args.quants.split(",") if q]:
        path = out / f"{stem}-{quant}.gguf"
        if not path.is_file():
            partial = path.with_suffix(".part")
            write_gguf(config, hf_dir, partial, quant)
            partial.rename(path)
        print(path)


if __name__ == "__main__":
    main()
