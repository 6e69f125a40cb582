"""Greedy output of r1serve's llama.cpp engine against llama.cpp's own server (issue #9).

Both serve the same GGUF with the same slots; the first chat prompt is asked with temperature 0,
EOS ignored, for ``--tokens`` tokens (default 64, the issue's check), and the two replies
(reasoning, then answer) must be the same text. A correctness check, not a timing: it may run
on a busy machine.

    python -m bench.greedy [--model FILE.gguf] [--tokens 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from bench.convert_gguf import default_gguf
from bench.run import greedy_text
from bench.servers import ServerProcess, llamacpp_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args()
    gguf = (args.model or default_gguf()).resolve()
    specs = llamacpp_pair(gguf, args.threads, args.slots)
    replies = {}
    with tempfile.TemporaryDirectory() as logs:
        for spec in specs:
            with ServerProcess(spec, threads=args.threads, log_dir=Path(logs)) as server:
                model = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]["id"]
                replies[spec.name] = greedy_text(server.url, model, args.tokens, ignore_eos=True)
    for name, text in replies.items():
        print(f"{name}: {text!r}")
    same = len(set(replies.values())) == 1
    print("identical" if same else "DIFFERENT")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
