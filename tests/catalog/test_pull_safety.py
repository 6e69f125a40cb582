"""Hostile listings (reliability 29) and a full disk (reliability 26): refused before any write."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fakehub import FakeHub
from r1serve.catalog import download
from r1serve.catalog.pull import (
    MAX_FILE_BYTES,
    PullOptions,
    PullTarget,
    pull,
    unsafe_path_reason,
)
from r1serve.catalog.store import lookup, meta_dir
from r1serve.errors import DownloadError

TINY = "r1serve-test/tiny-r1"
FAST = PullOptions(retry_wait_s=0)
SHA = "a" * 64


def _folder(data_dir: Path) -> Path:
    return data_dir / "models" / "r1serve-test--tiny-r1" / "main"


def _file_requests(hub: FakeHub) -> list[str]:
    return [r.path for r in hub.log if not r.path.startswith("/api/")]


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "../../../../tmp/evil.safetensors",
        "/etc/passwd",
        "C:\\Windows\\evil.dll",
        "C:evil.gguf",
        "sub\\..\\..\\evil",
        "nul\0byte.json",
        "new\nline.json",
        "ok/../../evil",
        "./config.json",
        "a//b",
        ".r1serve/manifest.json",
        "x" * 300,
    ],
)
def test_escaping_names_reject_the_whole_listing(
    fake_hub: FakeHub, tmp_path: Path, name: str
) -> None:
    fake_hub.faults.extra_siblings.append({"rfilename": name, "size": 10})
    with pytest.raises(DownloadError, match="refusing r1serve-test/tiny-r1"):
        pull(PullTarget(TINY), tmp_path, FAST)
    assert not tmp_path.joinpath("models").exists()
    assert _file_requests(fake_hub) == []
    assert not Path("/tmp/evil.safetensors").exists()


def test_path_rules() -> None:
    assert unsafe_path_reason("model-00001-of-00002.safetensors") is None
    assert unsafe_path_reason("quants/Q4_K_M/model.gguf") is None
    assert unsafe_path_reason("../x") is not None
    assert unsafe_path_reason("") is not None


@pytest.mark.parametrize(
    ("sibling", "message"),
    [
        ({"rfilename": "huge.gguf", "size": 10**15}, "declares 1000000000000000 bytes"),
        ({"rfilename": "neg.gguf", "size": -1}, "declares -1 bytes"),
        ({"rfilename": "model.safetensors", "size": 1}, "listed twice"),
        (
            {
                "rfilename": "x.gguf",
                "size": 1,
                "lfs": {"sha256": "zz", "size": 1, "pointerSize": 1},
            },
            "bad sha256",
        ),
        ({"rfilename": "y.json", "size": 1, "blobId": "../../x"}, "bad blob id"),
    ],
)
def test_implausible_listings_are_refused(
    fake_hub: FakeHub, tmp_path: Path, sibling: dict[str, object], message: str
) -> None:
    fake_hub.faults.extra_siblings.append(sibling)
    with pytest.raises(DownloadError, match=message):
        pull(PullTarget(TINY), tmp_path, FAST)
    assert not tmp_path.joinpath("models").exists()
    assert _file_requests(fake_hub) == []


def test_listing_without_sizes_is_refused(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.faults.extra_siblings.append({"rfilename": "nosize.gguf"})
    with pytest.raises(DownloadError, match=r"no size for 'nosize\.gguf'"):
        pull(PullTarget(TINY), tmp_path, FAST)


def test_declared_petabyte_of_a_selected_file_is_refused(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.faults.size_override["model.safetensors"] = 10**15
    with pytest.raises(DownloadError, match=f"limit {MAX_FILE_BYTES}"):
        pull(PullTarget(TINY), tmp_path, FAST)
    assert not tmp_path.joinpath("models").exists()


def test_symlinked_file_in_the_model_folder_is_not_written_through(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    folder = _folder(tmp_path / "data")
    folder.mkdir(parents=True)
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(DownloadError, match="symlink"):
        pull(PullTarget(TINY), tmp_path / "data", FAST)
    assert outside.read_text() == "precious"
    assert _file_requests(fake_hub) == []


def test_symlinked_folder_is_not_written_through(fake_hub: FakeHub, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "data" / "models" / "r1serve-test--tiny-r1-GGUF" / "main"
    folder.mkdir(parents=True)
    (folder / "quants").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DownloadError, match="symlink"):
        pull(PullTarget("r1serve-test/tiny-r1-GGUF", "quants/tiny-r1-Q8_0.gguf"), tmp_path / "data")
    assert list(outside.iterdir()) == []


def test_short_disk_is_refused_before_writing(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"not enough disk space: 0\.02 GiB to download"):
        pull(PullTarget(TINY), tmp_path, FAST, free_space=lambda path: 50 << 20)
    assert not tmp_path.joinpath("models").exists()
    assert _file_requests(fake_hub) == []


def test_disk_check_counts_only_missing_bytes(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.faults.drop_after["model.safetensors"] = 19_000_000
    with pytest.raises(DownloadError):
        pull(PullTarget(TINY), tmp_path, PullOptions(retries=0, retry_wait_s=0))
    seen: list[Path] = []

    def free(path: Path) -> int:
        seen.append(path)
        return (64 << 20) + 7_700_000  # headroom + what is left after the partial 19 MB

    pull(PullTarget(TINY), tmp_path, FAST, free_space=free)
    assert seen == [_folder(tmp_path)]


def _fsync_failing_for(suffix: str) -> Callable[[int], None]:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    return fsync


def test_disk_full_while_writing_is_clean_and_recovers(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(download.os, "fsync", _fsync_failing_for(".part"))
        with pytest.raises(
            DownloadError, match=r"disk full while writing model\.safetensors"
        ) as err:
            pull(PullTarget(TINY), tmp_path, FAST)
    assert "partial file was removed" in err.value.message
    assert list((meta_dir(_folder(tmp_path)) / "partial").glob("*")) == []
    assert not (_folder(tmp_path) / "model.safetensors").exists()
    assert lookup(TINY, tmp_path) is None

    pull(PullTarget(TINY), tmp_path, FAST)  # space is back
    assert lookup(TINY, tmp_path) == _folder(tmp_path)


def test_disk_full_while_saving_the_manifest_is_clean(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download.os, "fsync", _fsync_failing_for(".tmp"))
    with pytest.raises(DownloadError, match=r"cannot write the manifest .*No space left"):
        pull(PullTarget(TINY), tmp_path, FAST)
    assert list(meta_dir(_folder(tmp_path)).glob("*.tmp")) == []
