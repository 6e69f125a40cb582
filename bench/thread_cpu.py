"""Where a server's CPU goes per token: llama.cpp's compute threads against everything else.

Starts r1serve's llama.cpp engine and llama.cpp's own server (the same binding, the same
slots) one after the other, streams ``--requests`` chat replies of ``--tokens`` greedy tokens
one at a time (EOS ignored) to each, and reads every thread's CPU time from ``/proc`` before
and after. The ``--threads`` busiest threads are llama.cpp's compute threads (its decode loop
is one of them); the rest is the serving around it: for r1serve its Python (event loop,
detokenizer, stop strings, SSE) and llama.cpp's result queue, for llama.cpp's server its C++
HTTP thread. The main thread is shown apart: r1serve's event loop runs there (its engine's
per-request worker threads are the rest). Issue #9 asks whether r1serve's serving slows
llama.cpp down at one stream: this says how much CPU it takes per token next to llama.cpp's
own. Linux only (``/proc``).

    python -m bench.thread_cpu [--model FILE.gguf] [--requests 4] [--tokens 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.convert_gguf import default_gguf
from bench.servers import ServerProcess, ServerSpec, llamacpp_pair

PROMPT = "Tell me a long story about a lighthouse keeper."


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        times[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return times


def stream_once(url: str, model: str, tokens: int, extra: dict[str, object]) -> None:
    """One streamed chat reply, read to its end."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "max_tokens": tokens, "temperature": 0, **extra}  # fmt: skip
    # A fresh connection each time: the servers differ on keep-alive.
    with (
        httpx.Client(timeout=None) as http,
        http.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
    ):
        response.raise_for_status()
        for _ in response.iter_lines():
            pass


@dataclass(frozen=True)
class Split:
    name: str
    tokens: int
    wall_s: float
    compute_s: float  # the --threads busiest threads
    other_s: float  # every other thread
    main_s: float  # of which the main thread (r1serve's event loop)

    def row(self) -> str:
        per = 1000 / self.tokens
        return (
            f"| {self.name} | {self.tokens / self.wall_s:.1f} | {self.wall_s * per:.1f} | "
            f"{self.compute_s * per:.1f} | {self.other_s * per:.2f} | {self.main_s * per:.2f} | "
            f"{self.other_s / (self.compute_s + self.other_s) * 100:.1f} % |"
        )


def measure(spec: ServerSpec, args: argparse.Namespace, logs: Path) -> Split:
    with ServerProcess(spec, threads=args.threads, log_dir=logs) as server:
        model = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]["id"]
        stream_once(server.url, model, args.tokens, spec.extra_body)  # warm: prompt cache, pages
        before = thread_cpu_s(server.pid)
        started = time.perf_counter()
        for _ in range(args.requests):
            stream_once(server.url, model, args.tokens, spec.extra_body)
        wall = time.perf_counter() - started
        after = thread_cpu_s(server.pid)
        pid = server.pid
    used = {t: after[t] - before.get(t, 0.0) for t in after}
    busiest = sorted(used, key=used.__getitem__, reverse=True)[: args.threads]
    compute = sum(used[t] for t in busiest)
    main = 0.0 if pid in busiest else used.get(pid, 0.0)
    return Split(
        spec.name, args.requests * args.tokens, wall, compute, sum(used.values()) - compute, main
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args()
    gguf = (args.model or default_gguf()).resolve()
    specs = llamacpp_pair(gguf, args.threads, args.slots)
    with tempfile.TemporaryDirectory() as logs:
        splits = [measure(spec, args, Path(logs)) for spec in specs]
    print(f"{gguf.name}: {args.requests} x {args.tokens} tokens, one stream at a time, "
          f"{args.threads} threads\n")  # fmt: skip
    print("| server | tok/s | wall ms/token | compute threads CPU ms/token | "
          "other threads CPU ms/token | of which the main thread | other share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for split in splits:
        print(split.row())


if __name__ == "__main__":
    main()
