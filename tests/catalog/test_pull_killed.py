"""Reliability 27: a pull killed with SIGKILL at 50% resumes with Range on the next run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import r1serve
from fakehub import FakeHub
from r1serve.catalog.pull import PullOptions, PullTarget, pull
from r1serve.catalog.store import lookup

TINY = "r1serve-test/tiny-r1"
SAFETENSORS = "model.safetensors"


def _wait_for_partial(folder: Path, size: int, proc: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for partial in (folder / ".r1serve" / "partial").glob("*.part"):
            if partial.stat().st_size >= size:
                return partial
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the pull never reached half of the file")


def test_killed_pull_resumes_with_range(fake_hub: FakeHub, tmp_path: Path) -> None:
    hub_file = fake_hub.file(TINY, SAFETENSORS)
    half = len(hub_file.data) // 2
    fake_hub.faults.stall_after[SAFETENSORS] = half  # send half, then hang until killed
    src = Path(r1serve.__file__).parents[1]
    env = os.environ | {
        "HF_ENDPOINT": fake_hub.url,
        "HF_HUB_OFFLINE": "0",  # the child talks to the local fake hub only
        "R1SERVE_DATA_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "r1serve", "pull", TINY, "--yes"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        folder = tmp_path / "models" / "r1serve-test--tiny-r1" / "main"
        partial = _wait_for_partial(folder, half, proc)
    finally:
        proc.kill()
        proc.communicate()
    assert partial.stat().st_size == half
    assert lookup(TINY, tmp_path) is None

    fake_hub.faults.stall_after.clear()
    pull(PullTarget(TINY), tmp_path, PullOptions(retry_wait_s=0))
    gets = [r.headers for r in fake_hub.requests_for(f"/cdn/{hub_file.sha256}")]
    assert [g.get("range") for g in gets] == [None, f"bytes={half}-"]
    final = folder / SAFETENSORS
    assert hashlib.sha256(final.read_bytes()).hexdigest() == hub_file.sha256
    assert not partial.exists()
