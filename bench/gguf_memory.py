"""Resident memory of a GGUF loaded by llama.cpp (xllamacpp), against `r1serve models`' estimate.

Each model loads in a fresh child process (``--child``): xllamacpp's server with one slot at the
context the estimate assumes, 2 threads, llama.cpp's default batch sizes, one short greedy
completion so that every weight page and buffer has been touched; then the child reports its
VmRSS. The estimate is `llamacpp_memory` over the file's own tensor bytes (what
`r1serve models --estimate FILE.gguf` prints as "as stored, llama.cpp").

    python -m bench.gguf_memory                      # tiny-r1 and the embedded SmolLM2
    python -m bench.gguf_memory --model X.gguf:4096 --model Y.gguf:32768 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# r1serve is imported only in the parent: the child's RSS is llama.cpp's and Python's alone.

ROOT = Path(__file__).resolve().parent.parent
TINY_R1 = ROOT / "tests" / "fixtures" / "tiny-r1" / "tiny-r1.gguf"
TOLERANCE = 0.15


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    raise KeyError(key)


def child(path: str, context: int, threads: int) -> None:
    """Load ``path`` with xllamacpp, run one completion, print the RSS as JSON."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = context
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)
    server.handle_completions({"prompt": "Hello, my name is", "n_predict": 8, "temperature": 0})
    print(json.dumps({"rss_bytes": _status_bytes("VmRSS"), "peak_bytes": _status_bytes("VmHWM")}))


def measure(path: Path, context: int, threads: int = 2) -> dict[str, Any]:
    """RSS of ``path`` at ``context`` in a child, next to the estimate."""
    from r1serve.catalog.quants import llamacpp_memory
    from r1serve.catalog.sources import estimate_gguf

    done = subprocess.run(
        [sys.executable, "-m", "bench.gguf_memory", "--child", str(path), str(context),
         str(threads)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    source = estimate_gguf(path, context)
    assert source.stored_bytes is not None
    memory = llamacpp_memory(
        source.architecture,
        source.stored_bytes,
        context,
        repacked_bytes=source.stored_repacked_bytes,
    )
    error = memory.total_bytes / measured["rss_bytes"] - 1
    return {
        "model": path.name,
        "context": context,
        "weights_bytes": memory.weight_bytes,
        "kv_bytes": memory.kv_bytes,
        "runtime_bytes": memory.runtime_bytes,
        "estimate_bytes": memory.total_bytes,
        **measured,
        "error": error,
        "within_tolerance": abs(error) <= TOLERANCE,
    }


def _model_arg(text: str) -> tuple[Path, int]:
    path, _, context = text.rpartition(":")
    return Path(path), int(context)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=_model_arg, metavar="GGUF:CONTEXT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    from r1serve.engine.source import _embedded_default

    smollm2 = _embedded_default().file
    models = args.model or [(TINY_R1, 4096), (smollm2, 2048), (smollm2, 8192)]
    rows = [measure(path, context, args.threads) for path, context in models]
    mib = 1 << 20
    print("| model | context | estimate MiB (weights + KV + runtime) | measured RSS MiB | error |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['context']:,} | {r['estimate_bytes'] / mib:.1f} "
              f"({r['weights_bytes'] / mib:.1f} + {r['kv_bytes'] / mib:.1f} + "
              f"{r['runtime_bytes'] / mib:.1f}) | {r['rss_bytes'] / mib:.1f} | "
              f"{r['error']:+.1%} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if not all(r["within_tolerance"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
