"""`--estimate`: a local folder, a GGUF (header read safely), a hub repo's config.json."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from fakehub import FakeHub
from r1serve.catalog.gguf_header import parse_gguf_header, read_gguf_header
from r1serve.catalog.hub import hub_endpoints
from r1serve.catalog.sources import estimate_source
from r1serve.errors import DownloadError, ModelNotFoundError, UnsupportedModelError
from support.models import TINY_R1_GGUF, TINY_R1_HF

TINY_PARAMS = 9_806_400
TINY_KV_PER_TOKEN = 2 * 2 * 16 * 2 * 2  # layers x KV heads x head dim x (K, V) x bf16


def test_estimates_a_local_hf_folder() -> None:
    result = estimate_source(str(TINY_R1_HF), 4096, endpoints=[])
    assert result.kind == "hf-dir"
    assert result.memory.parameters.total == TINY_PARAMS
    assert result.memory.kv_bytes_per_token == TINY_KV_PER_TOKEN
    assert result.stored_bytes is None


def test_estimates_a_gguf_from_its_header() -> None:
    result = estimate_source(str(TINY_R1_GGUF), 4096, endpoints=[])
    assert result.kind == "gguf"
    assert result.memory.parameters.total == TINY_PARAMS  # summed over the tensors
    assert result.memory.kv_bytes_per_token == TINY_KV_PER_TOKEN
    assert result.stored_format == "F16"
    # token_embd in F16, the 25 other tensors in F32 (UPSTREAM_README.md)
    assert result.stored_bytes == 9_732_096 * 2 + (TINY_PARAMS - 9_732_096) * 4
    assert result.architecture.tie_word_embeddings
    assert result.architecture.max_context == 4096


def test_header_scan_agrees_with_gguf_reader_on_scalars() -> None:
    header = read_gguf_header(TINY_R1_GGUF)
    assert header.architecture == "qwen2"
    assert header.metadata["qwen2.block_count"] == 2
    assert header.metadata["tokenizer.ggml.eos_token_id"] == 151643
    assert header.array_lengths["tokenizer.ggml.tokens"] == 152064
    assert len(header.tensors) == 26
    assert header.tensors[0].name == "token_embd.weight"
    assert header.tensors[0].shape == (64, 152064)


def test_header_scan_equals_gguf_reader(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter

    # A small file with every value kind the scanner skips: strings, arrays, quantized tensors.
    path = tmp_path / "small.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("scanner check")
    writer.add_context_length(2048)
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])
    writer.add_array("tokenizer.ggml.scores", [float(i) for i in range(300)])
    writer.add_tensor("token_embd.weight", np.ones((300, 64), dtype=np.float16))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((64, 64), dtype=np.float32))
    q8 = np.zeros((64, 34 * 2), dtype=np.uint8)  # 64 rows of 2 Q8_0 blocks (34 bytes each)
    writer.add_tensor("blk.0.ffn_up.weight", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = GGUFReader(path)
    header = read_gguf_header(path)
    expected = [(t.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors]
    assert [(t.name, t.n_elements, t.n_bytes) for t in header.tensors] == expected
    assert len(expected) == 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"GGML" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "version 1"),
        (lambda b: b[:200], "truncated"),
        (lambda b: b[:8] + struct.pack("<Q", 10**12) + b[16:], "declares 1000000000000 tensors"),
        (lambda b: b[:16] + struct.pack("<Q", 2**62) + b[24:], "metadata keys"),
        (lambda b: b[:24] + struct.pack("<Q", 2**60) + b[32:], "bytes in a string"),
        (lambda b: b"", "bad magic|truncated"),
    ],
)
def test_crafted_gguf_headers_fail_cleanly(mutate: Callable[[bytes], bytes], message: str) -> None:
    head = TINY_R1_GGUF.read_bytes()[:2_000_000]
    with pytest.raises(UnsupportedModelError, match=message):
        parse_gguf_header(mutate(head))


def test_empty_gguf_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.touch()
    with pytest.raises(UnsupportedModelError, match="empty"):
        estimate_source(str(empty), 4096, endpoints=[])


def test_estimates_a_hub_repo_from_its_config(fake_hub: FakeHub) -> None:
    result = estimate_source("r1serve-test/tiny-r1", 4096, endpoints=hub_endpoints())
    assert result.kind == "hub"
    assert result.memory.parameters.total == TINY_PARAMS
    [request] = fake_hub.log
    assert request.path == "/r1serve-test/tiny-r1/resolve/main/config.json"


def test_hub_estimate_tries_mirrors_in_order(fake_hub: FakeHub, second_hub: FakeHub) -> None:
    second_hub.faults.down = True
    endpoints = hub_endpoints([second_hub.url])
    assert endpoints == [second_hub.url, fake_hub.url]
    assert estimate_source("r1serve-test/tiny-r1", 4096, endpoints=endpoints).kind == "hub"


def test_hub_repo_without_config(fake_hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        estimate_source("r1serve-test/nothing", 4096, endpoints=hub_endpoints())


def test_store_names_are_looked_up(tmp_path: Path) -> None:
    copy = tmp_path / "stored"
    shutil.copytree(TINY_R1_HF, copy)
    result = estimate_source(
        "me/tiny", 4096, endpoints=[], store_lookup=lambda name: copy if name == "me/tiny" else None
    )
    assert result.memory.parameters.total == TINY_PARAMS


def test_unknown_source_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        estimate_source(str(tmp_path / "missing" / "model"), 4096, endpoints=[])
    not_model = tmp_path / "weights.bin"
    not_model.write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match=r"expected a folder or a \.gguf"):
        estimate_source(str(not_model), 4096, endpoints=[])
    with pytest.raises(UnsupportedModelError, match=r"no config\.json"):
        estimate_source(str(tmp_path), 4096, endpoints=[])


def test_bad_mirror_url() -> None:
    with pytest.raises(DownloadError, match="not an http"):
        hub_endpoints(["ftp://mirror"])
