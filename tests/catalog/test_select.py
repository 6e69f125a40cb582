"""Which files a pull takes from a listing (no network)."""

from __future__ import annotations

import pytest

from r1serve.catalog.hub import RemoteFile, RepoListing
from r1serve.catalog.pull import select_files
from r1serve.errors import DownloadError


def _listing(*paths: str) -> RepoListing:
    files = tuple(RemoteFile(p, 10, None, "b" * 40) for p in paths)
    return RepoListing("org/m", "main", "c" * 40, "http://hub", files)


def _chosen(listing: RepoListing, filename: str | None = None, pickle: bool = False) -> set[str]:
    return {f.path for f in select_files(listing, filename, pickle).files}


def test_safetensors_repo_takes_shards_index_config_tokenizer_docs() -> None:
    listing = _listing(
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "LICENSE",
        "README.md",
        "pytorch_model.bin",
        "modeling_x.py",
        "configuration_x.py",
        "original/consolidated.00.pth",
        "figures/benchmark.png",
        "model-q4.gguf",
    )
    assert _chosen(listing) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "LICENSE",
        "README.md",
    }
    # safetensors win over pickles even when pickles are allowed
    assert "pytorch_model.bin" not in _chosen(listing, pickle=True)


def test_split_gguf_comes_whole() -> None:
    parts = [f"Q4/m-Q4-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    listing = _listing(*parts, "m-Q8.gguf", "README.md")
    assert _chosen(listing, parts[0]) == {*parts, "README.md"}
    with pytest.raises(DownloadError, match="2 GGUF files"):
        select_files(listing, None, False)


def test_single_gguf_repo_needs_no_file_name() -> None:
    assert _chosen(_listing("m.gguf", "README.md", "notes.txt")) == {"m.gguf", "README.md"}


def test_pickles_only_with_permission_and_only_weights() -> None:
    listing = _listing("pytorch_model.bin", "config.json", "training_args.bin", "x.pkl")
    with pytest.raises(DownloadError, match="--allow-pickle"):
        select_files(listing, None, False)
    assert _chosen(listing, pickle=True) == {"pytorch_model.bin", "config.json"}


def test_repo_without_loadable_weights() -> None:
    with pytest.raises(DownloadError, match="no weights"):
        select_files(_listing("config.json", "model.onnx", "x.py"), None, False)
