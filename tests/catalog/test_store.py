"""The local store: layout, names, `ls` entries, lookup for the loader, removal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from r1serve.catalog.store import (
    Manifest,
    ManifestFile,
    ModelName,
    list_models,
    lookup,
    model_dir,
    parse_model_name,
    read_manifest,
    remove_model,
    revision_dirname,
    write_manifest,
)
from r1serve.errors import ModelNotFoundError, UnsupportedModelError
from support.models import TINY_R1_GGUF, TINY_R1_HF


def _store_hf(data_dir: Path, repo_id: str, revision: str = "main", pending: bool = False) -> Path:
    folder = model_dir(data_dir, repo_id, revision)
    shutil.copytree(TINY_R1_HF, folder)
    files = {p.name: ManifestFile(p.stat().st_size) for p in folder.iterdir()}
    manifest = Manifest(repo_id, revision, "c" * 40, "http://hub", files)
    if pending:
        manifest.pending = ["model-00002-of-00002.safetensors"]
    write_manifest(folder, manifest)
    return folder


def _store_gguf(data_dir: Path, repo_id: str, *names: str) -> Path:
    folder = model_dir(data_dir, repo_id)
    manifest = read_manifest(folder) or Manifest(repo_id, "main", "c" * 40, "http://hub")
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TINY_R1_GGUF, folder / name)
        manifest.files[name] = ManifestFile((folder / name).stat().st_size)
    write_manifest(folder, manifest)
    return folder


def test_layout_keeps_repo_revision_and_files(tmp_path: Path) -> None:
    assert model_dir(tmp_path, "org/model") == tmp_path / "models" / "org--model" / "main"
    assert model_dir(tmp_path, "org/model", "refs/pr/1").name == "refs%2Fpr%2F1"
    assert model_dir(tmp_path, "gpt2").parent.name == "gpt2"


@pytest.mark.parametrize("repo_id", ["../etc", "org/..", "a/b/c", "org--x/y", ""])
def test_layout_refuses_bad_repo_ids(tmp_path: Path, repo_id: str) -> None:
    with pytest.raises(UnsupportedModelError):
        model_dir(tmp_path, repo_id)


@pytest.mark.parametrize("revision", ["", ".", "..", "a\0b"])
def test_layout_refuses_bad_revisions(revision: str) -> None:
    with pytest.raises(UnsupportedModelError):
        revision_dirname(revision)


def test_names_round_trip() -> None:
    for text in ("org/m", "org/m@v1.0", "org/m:q/x.gguf", "org/m@dev:x.gguf"):
        assert str(parse_model_name(text)) == text
    assert parse_model_name("org/m:x.gguf") == ModelName("org/m", "main", "x.gguf")


def test_ls_shows_hf_folder_with_size_format_dtype_location(tmp_path: Path) -> None:
    folder = _store_hf(tmp_path, "org/tiny")
    [entry] = list_models(tmp_path)
    assert (entry.name, entry.format, entry.dtype, entry.path) == (
        "org/tiny",
        "safetensors",
        "bfloat16",
        folder,
    )
    assert entry.size_bytes == sum(p.stat().st_size for p in TINY_R1_HF.iterdir())
    assert lookup("org/tiny", tmp_path) == folder


def test_ls_shows_each_gguf_and_lookup_returns_the_file(tmp_path: Path) -> None:
    folder = _store_gguf(tmp_path, "org/tiny-GGUF", "a-Q4.gguf", "sub/b-F16.gguf")
    entries = list_models(tmp_path)
    assert [(e.name, e.format, e.dtype) for e in entries] == [
        ("org/tiny-GGUF:a-Q4.gguf", "gguf", "F16"),
        ("org/tiny-GGUF:sub/b-F16.gguf", "gguf", "F16"),
    ]
    assert lookup("org/tiny-GGUF:sub/b-F16.gguf", tmp_path) == folder / "sub/b-F16.gguf"
    assert lookup("org/tiny-GGUF", tmp_path) is None  # two files: the name must say which


def test_single_gguf_answers_to_the_repo_name(tmp_path: Path) -> None:
    folder = _store_gguf(tmp_path, "org/one-GGUF", "only.gguf")
    assert lookup("org/one-GGUF", tmp_path) == folder / "only.gguf"


def test_split_gguf_is_one_entry_opened_at_its_first_part(tmp_path: Path) -> None:
    names = [f"m-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    folder = _store_gguf(tmp_path, "org/split", *names)
    [entry] = list_models(tmp_path)
    assert entry.name == "org/split:m-00001-of-00003.gguf"
    assert entry.size_bytes == 3 * TINY_R1_GGUF.stat().st_size
    assert lookup("org/split", tmp_path) == folder / names[0]


def test_revisions_other_than_main_carry_their_name(tmp_path: Path) -> None:
    folder = _store_hf(tmp_path, "org/tiny", "v2")
    assert [e.name for e in list_models(tmp_path)] == ["org/tiny@v2"]
    assert lookup("org/tiny@v2", tmp_path) == folder
    assert lookup("org/tiny", tmp_path) is None


def test_incomplete_pulls_are_listed_but_not_resolved(tmp_path: Path) -> None:
    _store_hf(tmp_path, "org/tiny", pending=True)
    [entry] = list_models(tmp_path)
    assert entry.format == "incomplete"
    assert lookup("org/tiny", tmp_path) is None


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "org/x:../../y", "", "a/b/c"])
def test_lookup_of_hostile_or_unknown_names_is_none(tmp_path: Path, name: str) -> None:
    _store_hf(tmp_path, "org/tiny")
    assert lookup(name, tmp_path) is None


def test_folders_without_manifest_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "models" / "org--junk" / "main").mkdir(parents=True)
    assert list_models(tmp_path) == []
    assert list_models(tmp_path / "nowhere") == []


def test_rm_removes_the_folder(tmp_path: Path) -> None:
    folder = _store_hf(tmp_path, "org/tiny")
    assert remove_model("org/tiny", tmp_path).name == "org/tiny"
    assert not folder.exists() and not folder.parent.exists()
    assert list_models(tmp_path) == []


def test_rm_of_one_gguf_keeps_the_others(tmp_path: Path) -> None:
    folder = _store_gguf(tmp_path, "org/g", "a.gguf", "b.gguf")
    remove_model("org/g:a.gguf", tmp_path)
    assert not (folder / "a.gguf").exists()
    assert [e.name for e in list_models(tmp_path)] == ["org/g:b.gguf"]
    remove_model("org/g:b.gguf", tmp_path)
    assert not folder.exists()


def test_rm_of_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no model named 'org/none'"):
        remove_model("org/none", tmp_path)
