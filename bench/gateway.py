"""Issue #10's targets for r1serve as a gateway (``--engine upstream``), in one run.

1. Latency overhead: an upstream ``r1serve serve`` (llama.cpp engine on the GGUF) and a gateway
   ``r1serve serve --engine upstream`` in front of it. ``r1serve bench`` at concurrency C runs
   against each in turn, direct, gateway, direct, gateway (``--rounds`` of each, so drift of
   the machine falls on both), greedy, EOS ignored, the same prompts in the same order.
   Targets: TPOT gateway / direct <= 1.05, TTFT gateway - direct <= 20 ms.
2. Failover: two upstream replicas of the same model behind one gateway (short health
   interval). Client threads stream chat requests; once a third of them are done, replica A
   is SIGKILLed. Each request is ok, failed after it had started streaming (a content or
   reasoning chunk had arrived), or failed before. Target: 0 failed before streaming.
3. bench/results/<date>-gateway.json and .md.

    python -m bench.gateway            # concurrency 16, 32 requests, 128 tokens; 60 failover
    python -m bench.gateway --quick    # a smoke run: concurrency 2, 4 requests, 16 tokens; 12

Every server shares this machine's cores with the others and with the client: the gateway's
own CPU competes with the model it fronts, which counts against the gateway here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from threading import Event
from typing import Any

import httpx

from bench.convert_gguf import default_gguf
from bench.run import git_commit
from bench.servers import ROOT, ServerProcess, ServerSpec, child_env, r1serve_spec
from r1serve.client.bench import load_prompts
from r1serve.client.bench_report import load_average, machine_info

TPOT_RATIO_BOUND = 1.05
TTFT_DIFF_BOUND_MS = 20.0
CPU_NOTE = (
    "the gateway, the upstream(s) and the benchmark client share this machine's cores, so the "
    "gateway's own CPU competes with the model: its overhead here is an upper bound"
)


def _data_dir(name: str) -> dict[str, str]:
    """A scratch database per server, so no two processes share one."""
    return {"R1SERVE_DATA_DIR": str(ROOT / "bench" / ".cache" / f"r1serve-data-{name}")}


def upstream_spec(model: Path, threads: int, slots: int, name: str) -> ServerSpec:
    """``r1serve serve`` on the model (llama.cpp for a GGUF) with ``slots`` sequences."""
    engine = "llamacpp" if model.suffix == ".gguf" else "transformers"
    spec = r1serve_spec(model, threads, "--max-num-seqs", str(slots), engine=engine, name=name)
    return dataclasses.replace(spec, env=_data_dir(name))


def gateway_spec(urls: list[str], limit: int, health_s: float, name: str = "gateway") -> ServerSpec:
    """``r1serve serve --engine upstream`` on ``urls`` (OpenAI base URLs, ``.../v1``)."""
    replicas = [part for url in urls for part in ("--upstream-url", url)]
    return ServerSpec(
        name,
        [sys.executable, "-m", "r1serve", "serve", "--engine", "upstream", *replicas,
         "--upstream-max-concurrency", str(limit), "--upstream-health-interval-s", str(health_s),
         "--port", "{port}", "--host", "127.0.0.1", "--log-level", "warning", "--no-auth"],
        extra_body={"ignore_eos": True},
        env=_data_dir(name),
    )  # fmt: skip


def model_id(url: str) -> str:
    return str(httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"])


# ---- 1. latency overhead ----------------------------------------------------------------


def bench_once(
    server: ServerProcess, args: argparse.Namespace, tmp: Path, tag: str, warmup: int
) -> dict[str, Any]:
    """One ``r1serve bench`` level at concurrency C; the level's numbers."""
    out = tmp / f"{tag}.json"
    command = [sys.executable, "-m", "r1serve", "bench", "--url", server.url,
               "--model", model_id(server.url), "--concurrency", str(args.concurrency),
               "--requests", str(args.requests), "--prompts", "chat",
               "--max-tokens", str(args.max_tokens), "--temperature", "0", "--ignore-eos",
               "--warmup", str(warmup), "--seed", "0", "--output", str(out)]  # fmt: skip
    print("$", shlex.join(command), file=sys.stderr, flush=True)
    # Its tables go to stderr: stdout carries only this harness's report.
    subprocess.run(command, env=child_env(1), cwd=ROOT, stdout=sys.stderr, check=False)
    if not out.exists():
        raise RuntimeError(f"r1serve bench against {server.spec.name} wrote nothing")
    level: dict[str, Any] = json.loads(out.read_text())["levels"][0]
    return level


def _ms(level: dict[str, Any], metric: str, stat: str) -> float | None:
    value = level.get(metric)
    return None if value is None else 1000 * float(value[stat])


def round_row(level: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one round that the report shows."""
    return {
        "ttft_p50_ms": _ms(level, "ttft", "p50"),
        "ttft_p95_ms": _ms(level, "ttft", "p95"),
        "tpot_p50_ms": _ms(level, "tpot", "p50"),
        "tpot_mean_ms": _ms(level, "tpot", "mean"),
        "output_tokens_per_s": level["output_tokens_per_s"],
        "completed": level["completed"],
        "errors": level["errors"],
        "error_messages": level["error_messages"],
    }


def mean_of_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number averaged over the rounds (None where a round has none); counts summed."""
    out: dict[str, Any] = {}
    for key in ("ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "tpot_mean_ms", "output_tokens_per_s"):
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = statistics.fmean(values) if len(values) == len(rows) and values else None
    out["completed"] = sum(r["completed"] for r in rows)
    out["errors"] = sum(r["errors"] for r in rows)
    return out


def overhead_targets(direct: dict[str, Any], gateway: dict[str, Any]) -> dict[str, Any]:
    def ratio(key: str) -> float | None:
        a, b = gateway[key], direct[key]
        return None if a is None or not b else a / b

    def diff(key: str) -> float | None:
        a, b = gateway[key], direct[key]
        return None if a is None or b is None else a - b

    t: dict[str, float | None] = {
        "tpot_p50_ratio": ratio("tpot_p50_ms"),
        "tpot_mean_ratio": ratio("tpot_mean_ms"),
        "ttft_p50_diff_ms": diff("ttft_p50_ms"),
        "ttft_p95_diff_ms": diff("ttft_p95_ms"),
    }
    bounds = {"tpot_p50_ratio": TPOT_RATIO_BOUND, "tpot_mean_ratio": TPOT_RATIO_BOUND,
              "ttft_p50_diff_ms": TTFT_DIFF_BOUND_MS}  # fmt: skip
    met = {k: None if (v := t[k]) is None else v <= bound for k, bound in bounds.items()}
    return {**t, "met": met}


def overhead_run(model: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Upstream and gateway side by side; alternate direct and gateway rounds."""
    c = args.concurrency
    result: dict[str, Any] = {"load_average_before": load_average()}
    with ServerProcess(upstream_spec(model, args.threads, c, "upstream"),
                       threads=args.threads, log_dir=args.log_dir) as upstream:  # fmt: skip
        gw = gateway_spec([f"{upstream.url}/v1"], c, health_s=5.0)
        with ServerProcess(gw, threads=1, log_dir=args.log_dir) as gateway:
            result["commands"] = {"upstream": shlex.join(upstream.command),
                                  "gateway": shlex.join(gateway.command)}  # fmt: skip
            rounds: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
            for index in range(args.rounds):
                for name, server in (("direct", upstream), ("gateway", gateway)):
                    print(f"== overhead round {index + 1}: {name}", file=sys.stderr, flush=True)
                    level = bench_once(server, args, tmp, f"{name}-{index}", 2 if index == 0 else 0)
                    rounds[name].append(round_row(level))
    result["rounds"] = rounds
    result["mean"] = {name: mean_of_rounds(rows) for name, rows in rounds.items()}
    result["targets"] = overhead_targets(result["mean"]["direct"], result["mean"]["gateway"])
    result["load_average_after"] = load_average()
    return result


# ---- 2. failover ------------------------------------------------------------------------


@dataclass
class StreamOutcome:
    """How one streamed request through the gateway went."""

    index: int
    started_s: float  # since the run began
    ended_s: float = 0.0
    chunks: int = 0  # content or reasoning chunks; streaming once there is one
    done: bool = False  # data: [DONE] arrived
    finish_reason: str | None = None
    error: str | None = None

    @property
    def streaming(self) -> bool:
        return self.chunks > 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.done and self.finish_reason is not None

    @property
    def kind(self) -> str:
        if self.ok:
            return "ok"
        return "failed_after_streaming" if self.streaming else "failed_before_streaming"


def _read_chunk(outcome: StreamOutcome, payload: str) -> None:
    if payload == "[DONE]":
        outcome.done = True
        return
    chunk = json.loads(payload)
    if "error" in chunk:
        outcome.error = str(chunk["error"].get("message", chunk["error"]))
        return
    for choice in chunk.get("choices", []):
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content"):
            outcome.chunks += 1
        outcome.finish_reason = choice.get("finish_reason") or outcome.finish_reason


def stream_one(
    url: str, body: dict[str, Any], outcome: StreamOutcome, t0: float, mark: tuple[int, Event]
) -> None:
    """POST one streamed chat and read it to the end; failures land in ``outcome``.

    ``mark`` (n, event): the event is set once n chunks have arrived, or the request ended.
    """
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                          timeout=httpx.Timeout(120, connect=10)) as response:  # fmt: skip
            if response.status_code != 200:
                outcome.error = f"HTTP {response.status_code}: {response.read()[:200]!r}"
                return
            for line in response.iter_lines():
                if line.startswith("data:"):
                    _read_chunk(outcome, line[5:].strip())
                    if outcome.chunks >= mark[0]:
                        mark[1].set()
            if not outcome.done and outcome.error is None:
                outcome.error = "stream ended without [DONE]"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        outcome.ended_s = time.monotonic() - t0
        mark[1].set()


def fire(url: str, args: argparse.Namespace, replica: ServerProcess) -> dict[str, Any]:
    """Stream ``failover_requests`` from ``failover_clients`` threads; kill the replica at 1/3.

    Client k starts once client k-1's first reply has max_tokens / clients chunks, so the
    clients stay out of step: when the replica dies, some of its requests are mid-reply and
    some have not started streaming, whatever the machine's speed.
    """
    model, prompts = model_id(url), load_prompts("chat")
    total, clients = args.failover_requests, args.failover_clients
    kill_after, step = max(1, total // 3), max(1, args.failover_max_tokens // clients)
    outcomes: list[StreamOutcome] = []
    taken, lock, third = [0], threading.Lock(), Event()
    started = [Event() for _ in range(clients)]
    t0 = time.monotonic()

    def take() -> int | None:
        with lock:
            taken[0] += 1
            return taken[0] - 1 if taken[0] <= total else None

    def client(k: int) -> None:
        if k:
            started[k - 1].wait(timeout=300)  # set at the latest when that request ends
        mark = (step, started[k])
        while (index := take()) is not None:
            outcome = StreamOutcome(index, started_s=time.monotonic() - t0)
            body = {"model": model, "messages": list(prompts[index % len(prompts)].messages),
                    "stream": True, "max_tokens": args.failover_max_tokens, "temperature": 0,
                    "ignore_eos": True}  # fmt: skip
            stream_one(url, body, outcome, t0, mark)
            mark = (0, Event())  # only the first request staggers the next client
            with lock:
                outcomes.append(outcome)
                if len(outcomes) >= kill_after:
                    third.set()

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, k) for k in range(clients)]
        third.wait(timeout=900)  # bounded even if requests hang: they time out first
        os.killpg(replica.pid, signal.SIGKILL)
        killed_s = time.monotonic() - t0
        print(f"== SIGKILL {replica.spec.name} after {len(outcomes)} requests", file=sys.stderr)
        for future in futures:
            future.result()
    return {"killed_at_s": killed_s, "finished_before_kill": kill_after,
            "outcomes": sorted(outcomes, key=lambda o: o.index)}  # fmt: skip


def _replica_metrics(url: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    keep = ("r1serve_upstream_up", "r1serve_upstream_requests", "r1serve_upstream_errors")
    return [line for line in text.splitlines() if line.startswith(keep)]


def failover_run(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Two replicas behind a gateway; replica A dies a third of the way through."""
    threads, slots = max(1, args.threads // 2), args.failover_clients
    result: dict[str, Any] = {"load_average_before": load_average()}
    with (
        ServerProcess(upstream_spec(model, threads, slots, "replica-a"),
                      threads=threads, log_dir=args.log_dir) as a,
        ServerProcess(upstream_spec(model, threads, slots, "replica-b"),
                      threads=threads, log_dir=args.log_dir) as b,
    ):  # fmt: skip
        spec = gateway_spec([f"{a.url}/v1", f"{b.url}/v1"], slots, health_s=0.5,
                            name="gateway-failover")  # fmt: skip
        with ServerProcess(spec, threads=1, log_dir=args.log_dir) as gateway:
            print("== failover", file=sys.stderr, flush=True)
            fired = fire(gateway.url, args, a)
            result["replica_metrics"] = _replica_metrics(gateway.url)
    outcomes: list[StreamOutcome] = fired.pop("outcomes")
    killed = fired["killed_at_s"]
    counts = {k: sum(o.kind == k for o in outcomes)
              for k in ("ok", "failed_after_streaming", "failed_before_streaming")}  # fmt: skip
    result |= fired | {
        "requests": len(outcomes),
        "counts": counts,
        "in_flight_at_kill": sum(o.started_s <= killed < o.ended_s for o in outcomes),
        "failed_started_after_kill": sum(not o.ok and o.started_s > killed for o in outcomes),
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
        "requests_detail": [dataclasses.asdict(o) | {"kind": o.kind} for o in outcomes],
        "target_met": counts["failed_before_streaming"] == 0,
        "load_average_after": load_average(),
    }
    return result


# ---- 3. report --------------------------------------------------------------------------


def _f(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "**not met**")


def overhead_table(overhead: dict[str, Any]) -> list[str]:
    lines = ["| path | round | TTFT p50 / p95 ms | TPOT p50 / mean ms | out tok/s | errors |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    rows = [(n, str(i + 1), r) for n, rs in overhead["rounds"].items() for i, r in enumerate(rs)]
    rows += [(n, "mean", r) for n, r in overhead["mean"].items()]
    for name, label, r in rows:
        lines.append(
            f"| {name} | {label} | {_f(r['ttft_p50_ms'])} / {_f(r['ttft_p95_ms'])} "
            f"| {_f(r['tpot_p50_ms'], 1)} / {_f(r['tpot_mean_ms'], 1)} "
            f"| {_f(r['output_tokens_per_s'], 1)} | {r['errors']} |"
        )
    t = overhead["targets"]
    return [
        *lines,
        "",
        "| target (issue #10) | measured | bound | |",
        "|---|---|---|---|",
        f"| TPOT p50 gateway / direct | {_f(t['tpot_p50_ratio'], 3)} | <= {TPOT_RATIO_BOUND} "
        f"| {_verdict(t['met']['tpot_p50_ratio'])} |",
        f"| TPOT mean gateway / direct | {_f(t['tpot_mean_ratio'], 3)} | <= {TPOT_RATIO_BOUND} "
        f"| {_verdict(t['met']['tpot_mean_ratio'])} |",
        f"| TTFT p50 gateway - direct (ms) | {_f(t['ttft_p50_diff_ms'], 1)} "
        f"| <= {TTFT_DIFF_BOUND_MS:.0f} | {_verdict(t['met']['ttft_p50_diff_ms'])} |",
        f"| TTFT p95 gateway - direct (ms) | {_f(t['ttft_p95_diff_ms'], 1)} | (shown) | |",
    ]


def failover_table(failover: dict[str, Any]) -> list[str]:
    c = failover["counts"]
    lines = [
        "| requests | ok | failed after streaming | failed before streaming | in flight at kill "
        "| failed, sent after kill |",
        "|---|---|---|---|---|---|",
        f"| {failover['requests']} | {c['ok']} | {c['failed_after_streaming']} "
        f"| {c['failed_before_streaming']} | {failover['in_flight_at_kill']} "
        f"| {failover['failed_started_after_kill']} |",
        "",
        f"Target: 0 failed before streaming: {_verdict(failover['target_met'])}. Replica A was "
        f"SIGKILLed {failover['killed_at_s']:.1f} s in, after {failover['finished_before_kill']} "
        "requests had finished.",
    ]
    lines += [f"- error seen: `{e[:160]}`" for e in failover["errors"]]
    return lines


def markdown(results: dict[str, Any]) -> str:
    s, m = results["settings"], results["machine"]
    return "\n".join([
        f"# r1serve gateway overhead and failover (issue #10), {results['date']}"
        + (" (QUICK: smoke run, not a result)" if s["quick"] else ""),
        "",
        f"- machine: {m['cpu_model']}, {m['usable_cores']} usable cores; load average at start "
        f"{results['load_average_start']}",
        f"- model: {results['model']} ({s['threads']} threads per upstream, half each for the two "
        "failover replicas)",
        f"- note: {CPU_NOTE}",
        f"- commit {results['git_commit']}; command `{results['command']}`",
        "",
        f"## Latency overhead: concurrency {s['concurrency']}, {s['requests']} requests, "
        f"{s['max_tokens']} tokens (EOS ignored), greedy, {s['rounds']} rounds each, alternating",
        "",
        *overhead_table(results["overhead"]),
        "",
        f"## Failover: {s['failover_clients']} client threads, {s['failover_requests']} streamed "
        f"requests of {s['failover_max_tokens']} tokens, two replicas, A killed at 1/3",
        "",
        *failover_table(results["failover"]),
        "",
    ])  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gateway overhead and failover (issue #10).")
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--concurrency", type=int, default=None, help="default 16 (quick: 2)")
    parser.add_argument("--requests", type=int, default=None, help="per round (default 2 x c)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 128 (quick: 16)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each upstream")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of direct and of gateway")
    parser.add_argument("--failover-requests", type=int, default=None, help="60 (quick: 12)")
    parser.add_argument("--failover-clients", type=int, default=None, help="8 (quick: 4)")
    parser.add_argument("--failover-max-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.concurrency = args.concurrency or (2 if args.quick else 16)
    args.requests = args.requests or (4 if args.quick else 2 * args.concurrency)
    args.max_tokens = args.max_tokens or (16 if args.quick else 128)
    args.failover_requests = args.failover_requests or (12 if args.quick else 60)
    args.failover_clients = args.failover_clients or (4 if args.quick else 8)
    return args


def main() -> None:
    args = parse_args()
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M") + "-gateway" + ("-quick" if args.quick else "")
    args.log_dir = args.results_dir / "logs" / stamp
    model = (args.model or default_gguf()).resolve()
    results: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.gateway", *sys.argv[1:]]),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "model": str(model),
        "note": CPU_NOTE,
        "settings": {k: v for k, v in vars(args).items() if k not in ("log_dir", "results_dir")}
        | {"model": str(model)},
    }
    with tempfile.TemporaryDirectory() as folder:
        results["overhead"] = overhead_run(model, args, Path(folder))
    results["failover"] = failover_run(model, args)
    results["load_average_end"] = load_average()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (args.results_dir / f"{stamp}.md").write_text(report)
    print(report)
    print(f"written: {args.results_dir / stamp}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        sys.exit(130)
