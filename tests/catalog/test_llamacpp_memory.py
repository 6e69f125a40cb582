"""The llama.cpp memory estimate against the resident memory of the model loaded by xllamacpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1serve.catalog.quants import llamacpp_memory
from r1serve.catalog.sources import estimate_gguf
from r1serve.engine.source import _embedded_default
from support.models import TINY_R1_GGUF

# In a fresh interpreter with nothing but xllamacpp: one slot at the context, llama.cpp's
# default batches, one short completion so that every weight page and buffer is touched.
CHILD = """
import json, sys
import xllamacpp
params = xllamacpp.CommonParams()
params.model.path = sys.argv[1]
params.n_ctx = int(sys.argv[2])
params.n_parallel = 1
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
server = xllamacpp.Server(params)
server.handle_completions({"prompt": "Hello, my name is", "n_predict": 4, "temperature": 0})
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps(int(status["VmRSS"].split()[0]) * 1024))
"""


def _measured_rss(path: Path, context: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(context)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return int(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "context"),
    [("tiny-r1", 4096), ("smollm2", 2048), ("smollm2", 8192)],
)
def test_estimate_is_within_15_percent_of_resident_memory(model: str, context: int) -> None:
    path = TINY_R1_GGUF if model == "tiny-r1" else _embedded_default().file
    source = estimate_gguf(path, context)
    assert source.stored_bytes is not None
    estimate = llamacpp_memory(
        source.architecture,
        source.stored_bytes,
        context,
        repacked_bytes=source.stored_repacked_bytes,
    ).total_bytes
    rss = _measured_rss(path, context)
    assert abs(estimate / rss - 1) <= 0.15, f"estimate {estimate:,} B, resident {rss:,} B"
