"""`pull` from the fake hub: choice of files, resume, checks, mirrors (reliability 27, 28, 30)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from filelock import FileLock
from huggingface_hub import constants

from fakehub import FakeHub, dead_url
from r1serve.catalog.pull import PullOptions, PullTarget, parse_pull_target, pull
from r1serve.catalog.store import list_models, lookup, meta_dir, read_manifest
from r1serve.errors import DownloadError
from support.models import TINY_R1_GGUF, TINY_R1_HF

TINY = "r1serve-test/tiny-r1"
GGUF_REPO = "r1serve-test/tiny-r1-GGUF"
SAFETENSORS = "model.safetensors"
FAST = PullOptions(retry_wait_s=0)


def _folder(data_dir: Path, repo_id: str = TINY) -> Path:
    return data_dir / "models" / repo_id.replace("/", "--") / "main"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _partials(data_dir: Path, repo_id: str = TINY) -> list[Path]:
    return sorted((meta_dir(_folder(data_dir, repo_id)) / "partial").glob("*.part"))


def _cdn_gets(hub: FakeHub, repo_id: str, path: str) -> list[dict[str, str]]:
    sha = hub.file(repo_id, path).sha256
    return [r.headers for r in hub.requests_for(f"/cdn/{sha}")]


def test_pulls_weights_config_and_tokenizer_but_no_code_or_pickles(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    result = pull(PullTarget(TINY), tmp_path, FAST)
    folder = _folder(tmp_path)
    assert result.folder == folder
    for name in ("config.json", "generation_config.json", SAFETENSORS, "tokenizer.json"):
        assert (folder / name).read_bytes() == (TINY_R1_HF / name).read_bytes()
    assert (folder / "README.md").is_file()
    assert (folder / "LICENSE").read_bytes() == b""
    for refused in ("modeling_evil.py", "training_args.bin", "optimizer.pkl", ".gitattributes"):
        assert not (folder / refused).exists()
        assert refused in result.skipped
    manifest = read_manifest(folder)
    assert manifest is not None and manifest.pending == []
    assert manifest.commit == "0123456789abcdef0123456789abcdef01234567"
    assert manifest.files[SAFETENSORS].sha256 == _sha256(TINY_R1_HF / SAFETENSORS)
    assert _partials(tmp_path) == []


def test_second_pull_downloads_nothing(fake_hub: FakeHub, tmp_path: Path) -> None:
    pull(PullTarget(TINY), tmp_path, FAST)
    before = len(fake_hub.log)
    result = pull(PullTarget(TINY), tmp_path, FAST)
    assert result.downloaded == ()
    assert [r.path for r in fake_hub.log[before:]] == [f"/api/models/{TINY}/revision/main"]


def test_repo_colon_file_pulls_one_gguf_from_many(fake_hub: FakeHub, tmp_path: Path) -> None:
    result = pull(parse_pull_target(f"{GGUF_REPO}:quants/tiny-r1-Q8_0.gguf"), tmp_path, FAST)
    folder = _folder(tmp_path, GGUF_REPO)
    assert _sha256(folder / "quants/tiny-r1-Q8_0.gguf") == _sha256(TINY_R1_GGUF)
    assert not (folder / "tiny-r1-F16.gguf").exists()
    assert result.name == f"{GGUF_REPO}:quants/tiny-r1-Q8_0.gguf"
    assert lookup(result.name, tmp_path) == folder / "quants/tiny-r1-Q8_0.gguf"


def test_repo_of_many_ggufs_asks_for_one(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"2 GGUF files; pick one .*tiny-r1-F16\.gguf"):
        pull(PullTarget(GGUF_REPO), tmp_path, FAST)
    with pytest.raises(DownloadError, match=r"has no 'nope\.gguf'"):
        pull(PullTarget(GGUF_REPO, "nope.gguf"), tmp_path, FAST)
    with pytest.raises(DownloadError, match="pulls one GGUF file"):
        pull(PullTarget(GGUF_REPO, "README.md"), tmp_path, FAST)
    assert not (tmp_path / "models").exists()


def test_pickled_weights_need_allow_pickle(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="--allow-pickle"):
        pull(PullTarget("r1serve-test/pickled"), tmp_path, FAST)
    assert not (tmp_path / "models").exists()
    options = PullOptions(allow_pickle=True, retry_wait_s=0)
    pull(PullTarget("r1serve-test/pickled"), tmp_path, options)
    assert (_folder(tmp_path, "r1serve-test/pickled") / "pytorch_model.bin").is_file()


def test_dropped_connection_resumes_with_range(fake_hub: FakeHub, tmp_path: Path) -> None:
    half = fake_hub.file(TINY, SAFETENSORS).data.__len__() // 2
    fake_hub.faults.drop_after[SAFETENSORS] = half
    pull(PullTarget(TINY), tmp_path, FAST)
    gets = _cdn_gets(fake_hub, TINY, SAFETENSORS)
    assert [g.get("range") for g in gets] == [None, f"bytes={half}-"]
    assert _sha256(_folder(tmp_path) / SAFETENSORS) == _sha256(TINY_R1_HF / SAFETENSORS)


def test_interrupted_pull_keeps_partial_and_rerun_resumes(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.faults.drop_after[SAFETENSORS] = 5_000_000
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        pull(PullTarget(TINY), tmp_path, PullOptions(retries=0, retry_wait_s=0))
    [partial] = _partials(tmp_path)
    assert partial.stat().st_size == 5_000_000
    assert [e.format for e in list_models(tmp_path)] == ["incomplete"]
    assert lookup(TINY, tmp_path) is None

    pull(PullTarget(TINY), tmp_path, FAST)
    gets = _cdn_gets(fake_hub, TINY, SAFETENSORS)
    assert gets[-1].get("range") == "bytes=5000000-"
    assert _sha256(_folder(tmp_path) / SAFETENSORS) == fake_hub.file(TINY, SAFETENSORS).sha256
    assert [e.format for e in list_models(tmp_path)] == ["safetensors"]


def test_server_ignoring_range_restarts_from_zero(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.faults.drop_after[SAFETENSORS] = 3_000_000
    with pytest.raises(DownloadError):
        pull(PullTarget(TINY), tmp_path, PullOptions(retries=0, retry_wait_s=0))
    fake_hub.faults.ignore_range = True
    pull(PullTarget(TINY), tmp_path, FAST)
    assert _cdn_gets(fake_hub, TINY, SAFETENSORS)[-1].get("range") == "bytes=3000000-"
    final = _folder(tmp_path) / SAFETENSORS
    # Appending the full body to the 3 MB prefix would give a longer file with a wrong hash.
    assert final.stat().st_size == (TINY_R1_HF / SAFETENSORS).stat().st_size
    assert _sha256(final) == _sha256(TINY_R1_HF / SAFETENSORS)


@pytest.mark.parametrize(
    ("fault", "path", "message"),
    [
        ("flip_byte", SAFETENSORS, "sha256 mismatch"),
        ("flip_byte", "config.json", "git sha1 mismatch"),
        ("truncate", SAFETENSORS, "announces"),
        ("html_error", SAFETENSORS, "HTML page"),
        ("html_error", "tokenizer_config.json", "HTML page"),
    ],
)
def test_bad_bytes_are_detected_and_removed(
    fake_hub: FakeHub, tmp_path: Path, fault: str, path: str, message: str
) -> None:
    if fault == "flip_byte":
        fake_hub.faults.flip_byte[path] = 100
    elif fault == "truncate":
        fake_hub.faults.truncate[path] = 1_000_000
    else:
        fake_hub.faults.html_error.add(path)
    with pytest.raises(DownloadError, match=message) as caught:
        pull(PullTarget(TINY), tmp_path, FAST)
    assert "removed" in caught.value.message
    assert not (_folder(tmp_path) / path).exists()
    assert _partials(tmp_path) == []
    assert lookup(TINY, tmp_path) is None


def test_down_mirror_falls_through_to_the_next(
    fake_hub: FakeHub, second_hub: FakeHub, tmp_path: Path
) -> None:
    second_hub.faults.down = True
    options = PullOptions(mirrors=(dead_url(), second_hub.url), retry_wait_s=0)
    result = pull(PullTarget(TINY), tmp_path, options)
    assert result.endpoint == fake_hub.url  # HF_ENDPOINT, after both mirrors failed
    assert second_hub.log  # it was asked first
    assert lookup(TINY, tmp_path) == _folder(tmp_path)


def test_mirror_answering_html_is_skipped(
    fake_hub: FakeHub, second_hub: FakeHub, tmp_path: Path
) -> None:
    second_hub.faults.html_error.add("api")
    result = pull(PullTarget(TINY), tmp_path, PullOptions(mirrors=(second_hub.url,)))
    assert result.endpoint == fake_hub.url


def test_first_working_mirror_serves_everything(
    fake_hub: FakeHub, second_hub: FakeHub, tmp_path: Path
) -> None:
    result = pull(PullTarget(TINY), tmp_path, PullOptions(mirrors=(second_hub.url,)))
    assert result.endpoint == second_hub.url
    assert not fake_hub.log


def test_file_falls_back_to_next_endpoint_mid_pull(
    fake_hub: FakeHub, second_hub: FakeHub, tmp_path: Path
) -> None:
    second_hub.faults.drop_after[SAFETENSORS] = 2_000_000
    options = PullOptions(mirrors=(second_hub.url,), retries=0, retry_wait_s=0)
    pull(PullTarget(TINY), tmp_path, options)
    # The mirror dropped after 2 MB (no retries allowed); HF_ENDPOINT served the rest.
    assert _cdn_gets(fake_hub, TINY, SAFETENSORS)[0].get("range") == "bytes=2000000-"
    assert _sha256(_folder(tmp_path) / SAFETENSORS) == _sha256(TINY_R1_HF / SAFETENSORS)


def test_every_endpoint_down_is_one_clear_error(tmp_path: Path, fake_hub: FakeHub) -> None:
    fake_hub.faults.down = True
    with pytest.raises(DownloadError, match=r"cannot list .*: http://127\.0\.0\.1:\d+: .*; http"):
        pull(PullTarget(TINY), tmp_path, PullOptions(mirrors=(dead_url(),)))
    assert not (tmp_path / "models").exists()


def test_redirect_to_another_host_gets_no_token(
    fake_hub: FakeHub, second_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.faults.cdn_base = second_hub.url  # LFS files live on "another host"
    pull(PullTarget(TINY), tmp_path, FAST)
    hub_requests = [r for r in fake_hub.log if r.method == "GET"]
    assert hub_requests and all("authorization" in r.headers for r in hub_requests)
    cdn_requests = [r for r in second_hub.log if r.path.startswith("/cdn/")]
    assert cdn_requests
    assert all("authorization" not in r.headers for r in cdn_requests)
    assert all("cookie" not in r.headers for r in cdn_requests)
    assert lookup(TINY, tmp_path) == _folder(tmp_path)


def test_proxy_from_environment_is_used(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    monkeypatch.setenv("HTTP_PROXY", fake_hub.url)
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.example.invalid")
    huggingface_hub.close_session()  # the shared client reads proxies when it is created
    pull(PullTarget(TINY), tmp_path, FAST)
    assert fake_hub.log and all(r.proxied for r in fake_hub.log)
    assert lookup(TINY, tmp_path) is not None


def test_offline_mode_refuses(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        pull(PullTarget(TINY), tmp_path, FAST)
    assert not fake_hub.log


def test_unknown_repo_and_revision(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404, no such repo"):
        pull(PullTarget("r1serve-test/missing"), tmp_path, FAST)
    with pytest.raises(DownloadError, match="HTTP 404, no such revision"):
        pull(PullTarget(TINY), tmp_path, PullOptions(revision="v9"))
    with pytest.raises(DownloadError, match=r"HTTP 403, gated repo: .* set HF_TOKEN"):
        pull(PullTarget("r1serve-test/gated"), tmp_path, FAST)
    with pytest.raises(DownloadError, match="not a hub repo id"):
        parse_pull_target("../../etc")


def test_concurrent_pull_of_the_same_folder_is_refused(fake_hub: FakeHub, tmp_path: Path) -> None:
    meta = meta_dir(_folder(tmp_path))
    meta.mkdir(parents=True)
    with FileLock(meta / "pull.lock"), pytest.raises(DownloadError, match="another"):
        pull(PullTarget(TINY), tmp_path, FAST)


def test_declined_confirmation_writes_nothing(fake_hub: FakeHub, tmp_path: Path) -> None:
    seen = []

    def decline(plan: object) -> bool:
        seen.append(plan)
        return False

    with pytest.raises(DownloadError, match="cancelled"):
        pull(PullTarget(TINY), tmp_path, FAST, confirm=decline)
    assert len(seen) == 1 and not (tmp_path / "models").exists()
