"""The converted-GGUF cache gives the same weights and reply, and never blocks a load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from r1serve.engine.source import resolve_model_source
from r1serve.engine.transformers.gguf_cache import cache_entry, store
from r1serve.engine.transformers.loader import load_model
from support.models import TINY_R1_GGUF, TINY_R1_HF


@pytest.mark.slow
def test_second_load_comes_from_the_cache_with_equal_weights(tmp_path: Path) -> None:
    gguf = Path(shutil.copy(TINY_R1_GGUF, tmp_path / "tiny-r1.gguf"))
    source = resolve_model_source(str(gguf))
    cache = tmp_path / "cache"
    first = load_model(source, cache_dir=cache)
    entry = cache_entry(gguf, first.dtype, cache)
    assert (entry / "complete").is_file()
    second = load_model(source, cache_dir=cache)
    assert second.load_seconds < first.load_seconds
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.context_length == first.context_length
    assert second.eos_token_ids == first.eos_token_ids


def test_unwritable_cache_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loaded = load_model(resolve_model_source(str(TINY_R1_HF)))
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    store(loaded.model, blocker / "entry")
    assert "could not cache" in caplog.text
    assert not (blocker / "entry").exists()


def test_a_copy_of_the_file_finds_the_same_entry(tmp_path: Path) -> None:
    one = Path(shutil.copy(TINY_R1_GGUF, tmp_path / "a.gguf"))
    (tmp_path / "b").mkdir()
    two = Path(shutil.copy(TINY_R1_GGUF, tmp_path / "b" / "a.gguf"))
    root = tmp_path / "cache"
    assert cache_entry(one, torch.float32, root) == cache_entry(two, torch.float32, root)
    assert cache_entry(one, torch.float32, root) != cache_entry(one, torch.bfloat16, root)
    with two.open("r+b") as handle:  # same size and name, other content: another entry
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(b"\x01" if last == b"\x00" else b"\x00")
    assert two.stat().st_size == one.stat().st_size
    assert cache_entry(one, torch.float32, root) != cache_entry(two, torch.float32, root)
