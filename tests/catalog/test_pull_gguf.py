"""`pull` of one GGUF quantization: catalog names, REPO --gguf QUANT, split and ambiguous repos."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakehub import FakeHub
from r1serve.catalog.hub import RemoteFile, RepoListing
from r1serve.catalog.pull import PullOptions, PullTarget, parse_pull_target, pull, select_files
from r1serve.catalog.store import gguf_quant_label, list_models, lookup, read_manifest
from r1serve.errors import DownloadError
from support.models import TINY_R1_GGUF

FAST = PullOptions(retry_wait_s=0)
DISTILL_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
DISTILL_Q4 = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
SPLIT_REPO = "r1serve-test/split-GGUF"


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-1.5b-instruct-q8_0.gguf", "Q8_0"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("DeepSeek-R1-Q4_K_M/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf", "Q4_K_M"),
        ("DeepSeek-R1-UD-Q2_K_XL-00001-of-00005.gguf", "Q2_K_XL"),
        ("Llama-3-8B-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("model-IQ4_XS.gguf", "IQ4_XS"),
        ("DeepSeek-R1-Distill-Qwen-7B-f16.gguf", "F16"),
        ("tiny-r1.gguf", None),
    ],
)
def test_reads_the_quantization_from_a_file_name(path: str, label: str | None) -> None:
    assert gguf_quant_label(path) == label


@pytest.mark.parametrize(
    ("text", "gguf", "target"),
    [
        ("deepseek-r1-distill-qwen-7b:q4_k_m", None,
         PullTarget("bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF", quant="Q4_K_M")),
        ("DeepSeek-R1-Distill-Qwen-7B", None,  # no quantization: the usual Q4_K_M
         PullTarget("bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF", quant="Q4_K_M")),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B:Q8_0", None,  # the original repo has no GGUF
         PullTarget("bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF", quant="Q8_0")),
        ("qwen2.5-0.5b-instruct:q5_k_m", None,
         PullTarget("Qwen/Qwen2.5-0.5B-Instruct-GGUF", quant="Q5_K_M")),
        ("org/any-GGUF", "q5_k_m", PullTarget("org/any-GGUF", quant="Q5_K_M")),
        ("org/any-GGUF:IQ4_XS", None, PullTarget("org/any-GGUF", quant="IQ4_XS")),
        ("org/any-GGUF:dir/x.gguf", None, PullTarget("org/any-GGUF", "dir/x.gguf")),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", None,  # no quant: the safetensors repo
         PullTarget("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")),
    ],
)  # fmt: skip
def test_parses_catalog_names_and_quantizations(
    text: str, gguf: str | None, target: PullTarget
) -> None:
    assert parse_pull_target(text, gguf) == target


@pytest.mark.parametrize(
    ("text", "gguf", "message"),
    [
        ("no-such-model:q4_k_m", None, "neither a hub repo id nor a catalog model"),
        ("org/any-GGUF:Q8_0", "Q4_K_M", "give the quantization once"),
        ("deepseek-r1-distill-qwen-7b:x.gguf", None, "takes a quantization, not a file"),
    ],
)
def test_refuses_unclear_targets(text: str, gguf: str | None, message: str) -> None:
    with pytest.raises(DownloadError, match=message):
        parse_pull_target(text, gguf)


def _listing(*paths: str) -> RepoListing:
    files = tuple(RemoteFile(p, 10, None, "b" * 40) for p in paths)
    return RepoListing("org/m", "main", "c" * 40, "http://hub", files)


def test_picks_the_file_of_the_quantization_and_its_split_parts() -> None:
    listing = _listing(
        "m-Q4_K_M.gguf",
        "m-Q8_0/m-Q8_0-00001-of-00002.gguf",
        "m-Q8_0/m-Q8_0-00002-of-00002.gguf",
        "README.md",
    )
    chosen = {f.path for f in select_files(listing, None, False, "q8_0").files}
    assert chosen == {
        "m-Q8_0/m-Q8_0-00001-of-00002.gguf",
        "m-Q8_0/m-Q8_0-00002-of-00002.gguf",
        "README.md",
    }
    first = select_files(listing, None, False, "Q4_K_M").files[0]
    assert first.path == "m-Q4_K_M.gguf"


def test_pulls_a_catalog_model_by_short_name_finds_and_resolves_it(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    result = pull(parse_pull_target("deepseek-r1-distill-qwen-1.5b:q4_k_m"), tmp_path, FAST)
    assert result.name == f"{DISTILL_REPO}:{DISTILL_Q4}"
    assert set(result.files) == {DISTILL_Q4, "README.md"}
    assert (result.folder / DISTILL_Q4).read_bytes() == TINY_R1_GGUF.read_bytes()
    manifest = read_manifest(result.folder)
    assert manifest is not None and manifest.pending == []
    assert manifest.files[DISTILL_Q4].sha256 == fake_hub.file(DISTILL_REPO, DISTILL_Q4).sha256
    [stored] = list_models(tmp_path)
    assert (stored.name, stored.format, stored.dtype) == (result.name, "gguf", "F16")
    for name in (result.name, "deepseek-r1-distill-qwen-1.5b:q4_k_m", f"{DISTILL_REPO}:Q4_K_M"):
        assert lookup(name, tmp_path) == result.folder / DISTILL_Q4, name
    assert lookup("deepseek-r1-distill-qwen-1.5b:q8_0", tmp_path) is None  # not pulled
    # A second quantization lands beside the first; both stay findable.
    pull(parse_pull_target(DISTILL_REPO, "Q8_0"), tmp_path, FAST)
    assert len(list_models(tmp_path)) == 2
    assert lookup("deepseek-r1-distill-qwen-1.5b:q8_0", tmp_path) is not None
    assert lookup("deepseek-r1-distill-qwen-1.5b", tmp_path) == result.folder / DISTILL_Q4


def test_pulls_a_split_gguf_whole(fake_hub: FakeHub, tmp_path: Path) -> None:
    result = pull(PullTarget(SPLIT_REPO, quant="Q4_K_M"), tmp_path, FAST)
    first = "Q4_K_M/tiny-r1-Q4_K_M-00001-of-00002.gguf"
    assert result.name == f"{SPLIT_REPO}:{first}"
    parts = [result.folder / first, result.folder / first.replace("00001-of", "00002-of")]
    assert b"".join(p.read_bytes() for p in parts) == TINY_R1_GGUF.read_bytes()
    [stored] = list_models(tmp_path)
    assert stored.path == parts[0] and stored.size_bytes == TINY_R1_GGUF.stat().st_size


@pytest.mark.parametrize(
    ("quant", "message"),
    [
        ("Q8_0", "has no Q8_0 GGUF (quantizations: IQ4_XS, Q2_K, Q4_K_M, Q5_K_M)"),
        ("Q5_K_M", "has 2 GGUF files for Q5_K_M (other-Q5_K_M.gguf, tiny-r1-Q5_K_M.gguf)"),
        ("Q2_K", "lacks 2 of its parts"),
    ],
)
def test_refuses_missing_ambiguous_and_incomplete_quantizations(
    fake_hub: FakeHub, tmp_path: Path, quant: str, message: str
) -> None:
    with pytest.raises(DownloadError, match=re.escape(message)):
        pull(PullTarget(SPLIT_REPO, quant=quant), tmp_path, FAST)
    assert not (tmp_path / "models").exists()  # nothing written
