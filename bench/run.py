"""The side-by-side benchmark of issues #3 and #9, in one run on one machine and one model.

1. The model: a GGUF (default: the embedded SmolLM2) for the llama.cpp servers, and a
   safetensors folder for the transformers ones: ``--hf-model``, or the GGUF converted once
   (bench/.cache/).
2. The raw engine loop (bench/engine_loop.py), nothing else running.
3. Each server alone, one after another: start, greedy check, warm up, sweep, stop. The load
   average is recorded before each.
       r1serve-llamacpp     `r1serve serve --engine llamacpp` on the GGUF
       r1serve-transformers `r1serve serve --engine transformers` on the folder (float32)
       llamacpp-server      llama.cpp's own server through xllamacpp, the same slots
       llama-cpp-python     `python -m llama_cpp.server` (its own venv, see docs/benchmarks.md)
       reference            bench/reference_server.py (one generate thread per request)
       transformers-cb      `transformers serve --continuous-batching` (only when named)
4. The soak checks (bench/soak.py) against a fresh r1serve (transformers engine).
5. bench/results/<date>.json and .md.

    python -m bench.run            # the full run: concurrency 1, 4, 16; 128 tokens
    python -m bench.run --quick    # a smoke run: concurrency 1, 4; 8 requests; 32 tokens
    python -m bench.run --model bench/.cache/r1-distill-qwen-1.5b-random/...-Q4_K_M.gguf \
        --hf-model bench/.cache/r1-distill-qwen-1.5b-random/hf   # the 1.5B architecture
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.convert_gguf import convert, default_gguf
from bench.report import markdown, targets
from bench.servers import (
    ROOT,
    ServerProcess,
    ServerSpec,
    child_env,
    llama_cpp_python_spec,
    llamacpp_server_spec,
    r1serve_spec,
    reference_spec,
    transformers_spec,
)
from r1serve.client.bench import load_prompts
from r1serve.client.bench_report import load_average, machine_info

SERVERS = (
    "r1serve-llamacpp",
    "r1serve-transformers",
    "llamacpp-server",
    "llama-cpp-python",
    "reference",
    "r1serve-llamacpp-defaults",
    "r1serve-transformers-defaults",
    "transformers-cb",
)
DEFAULT_SERVERS = SERVERS[:-1]  # issue #9's servers; transformers-cb when named
GGUF_SERVERS = frozenset(
    {"r1serve-llamacpp", "llamacpp-server", "llama-cpp-python", "r1serve-llamacpp-defaults"}
)
GREEDY_TOKENS = 32


def model_files(spec: str | None, hf_model: str | None) -> tuple[Path | None, Path]:
    """(GGUF or None, safetensors folder): the folder given, or converted from the GGUF."""
    if spec and Path(spec).is_dir():
        return None, Path(spec).resolve()
    gguf = (Path(spec) if spec else default_gguf()).resolve()
    if hf_model:
        return gguf, Path(hf_model).resolve()
    return gguf, convert(gguf, ROOT / "bench" / ".cache" / f"{gguf.stem}-hf").resolve()


def server_specs(gguf: Path | None, hf: Path, args: argparse.Namespace) -> dict[str, ServerSpec]:
    """Every server the run may start; GGUF servers only when there is a GGUF."""
    # The same KV cells everywhere: SLOTS sequences of --ctx-per-slot tokens each.
    slots = ["--max-num-seqs", str(args.slots), "--max-model-len", str(args.ctx_per_slot)]
    specs = {
        "r1serve-transformers": r1serve_spec(hf, args.threads, *slots, name="r1serve-transformers"),
        # make run's own plan (slots and context from the model and memory): resident memory
        # as a user gets it, issue #9's memory target.
        "r1serve-transformers-defaults": r1serve_spec(
            hf, args.threads, name="r1serve-transformers-defaults"
        ),
        "reference": reference_spec(hf, args.threads),
        "transformers-cb": transformers_spec(hf),
    }
    if gguf is not None:
        from r1serve.catalog.gguf_header import read_gguf_header

        eos = read_gguf_header(gguf).metadata.get("tokenizer.ggml.eos_token_id")
        specs |= {
            "r1serve-llamacpp": r1serve_spec(
                gguf, args.threads, *slots, engine="llamacpp", name="r1serve-llamacpp"
            ),
            "r1serve-llamacpp-defaults": r1serve_spec(
                gguf, args.threads, engine="llamacpp", name="r1serve-llamacpp-defaults"
            ),
            "llamacpp-server": llamacpp_server_spec(
                gguf, args.threads, args.slots, args.ctx_per_slot
            ),
            "llama-cpp-python": llama_cpp_python_spec(
                gguf, args.threads, int(str(eos)), args.ctx_per_slot
            ),
        }
    return specs


def run_json(command: list[str], threads: int, output: Path) -> dict[str, Any]:
    """Run a child that writes JSON to ``output``; its stderr passes through."""
    print("$", shlex.join(command), file=sys.stderr, flush=True)
    completed = subprocess.run(command, env=child_env(threads), cwd=ROOT, check=False)
    if not output.exists():
        raise RuntimeError(f"{command[2]} exited with {completed.returncode} and wrote nothing")
    result: dict[str, Any] = json.loads(output.read_text())
    return result


def engine_loop(model: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / "engine_loop.json"
    command = [sys.executable, "-m", "bench.engine_loop", "--model", str(model),
               "--threads", str(args.threads), "--prompts", args.prompts,
               "--requests", str(requests_at(1, args)), "--max-tokens", str(args.max_tokens),
               "--output", str(out)]  # fmt: skip
    return run_json(command, args.threads, out)


def requests_at(concurrency: int, args: argparse.Namespace) -> int:
    """Requests per level: enough that the level is mostly at full concurrency."""
    return int(args.requests or max(8, 2 * concurrency))


def greedy_text(
    url: str, model_id: str, tokens: int = GREEDY_TOKENS, *, ignore_eos: bool = False
) -> str:
    """The reply to the first chat prompt, greedy, EOS honoured unless ``ignore_eos``
    (reasoning, then answer)."""
    prompt = load_prompts("chat")[0]
    body = {"model": model_id, "messages": list(prompt.messages), "max_tokens": tokens,
            "temperature": 0, **({"ignore_eos": True} if ignore_eos else {})}  # fmt: skip
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    message = response.json()["choices"][0]["message"]
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    return (f"<think>{reasoning}</think>" if reasoning else "") + str(message["content"] or "")


def sweep(
    server: ServerProcess, model_id: str, args: argparse.Namespace, tmp: Path
) -> tuple[list[Any], list[str]]:
    """`r1serve bench` at each concurrency level, warm-up before the first; levels and notes."""
    levels, notes = [], []
    for index, concurrency in enumerate(args.concurrency):
        out = tmp / f"{server.spec.name}-{concurrency}.json"
        command = [sys.executable, "-m", "r1serve", "bench", "--url", server.url,
                   "--model", model_id, "--concurrency", str(concurrency),
                   "--requests", str(requests_at(concurrency, args)), "--prompts", args.prompts,
                   "--max-tokens", str(args.max_tokens), "--temperature", "0",
                   "--warmup", "2" if index == 0 else "0", "--seed", "0",
                   "--output", str(out)]  # fmt: skip
        extra = dict(server.spec.extra_body)
        if extra.pop("ignore_eos", False):
            command.append("--ignore-eos")
        if extra:
            command += ["--extra-body", json.dumps(extra)]
        document = run_json(command, args.threads, out)
        levels += document["levels"]
        notes += [f"concurrency {concurrency}: {note}" for note in document["notes"]]
    return levels, notes


def bench_server(spec: ServerSpec, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start one server alone, check and measure it, stop it."""
    result: dict[str, Any] = {"load_average_before": load_average()}
    started = time.monotonic()
    print(f"== {spec.name}", file=sys.stderr, flush=True)
    with ServerProcess(spec, threads=args.threads, log_dir=args.log_dir) as server:
        try:
            result["command"] = shlex.join(server.command)
            result["startup_s"] = time.monotonic() - started
            model_id = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["id"]
            result["model_id"] = model_id
            result["greedy_text"] = text = greedy_text(server.url, model_id)
            if args.first_text is None:
                args.first_text = (spec.name, text)
            elif text != args.first_text[1]:
                print(f"WARNING: greedy text of {spec.name} differs from {args.first_text[0]}:\n"
                      f"  {text!r}\n  {args.first_text[1]!r}", file=sys.stderr)  # fmt: skip
            result["levels"], result["notes"] = sweep(server, model_id, args, tmp)
            result["rss_after_bytes"] = server.rss_bytes()
        except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
            raise RuntimeError(f"{exc}{server.exit_note()}") from exc
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Side-by-side serving benchmark (issue #3).")
    parser.add_argument("--model", help="GGUF file or safetensors folder (default: SmolLM2)")
    parser.add_argument(
        "--hf-model", help="safetensors folder for the transformers servers (default: converted)"
    )
    parser.add_argument(
        "--slots", type=int, default=None, help="parallel sequences (default: top concurrency)"
    )
    parser.add_argument(
        "--ctx-per-slot", type=int, default=2048, help="context of each sequence, every server"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default=None, help="default 1,4,16 (quick: 1,4)")
    parser.add_argument("--requests", type=int, default=None, help="per level (default 2 x c)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 128 (quick: 32)")
    parser.add_argument("--prompts", default="chat")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    parser.add_argument("--no-soak", dest="soak", action="store_false")
    parser.add_argument(
        "--no-engine-loop",
        dest="engine_loop",
        action="store_false",
        help="skip the raw transformers engine loop (minutes on a 1.5B model in float32)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--cpus", default=None, help="run everything on these cores, e.g. 0,1 (a bigger machine)"
    )
    args = parser.parse_args()
    if args.cpus:
        # Children inherit the affinity: servers, engine loop and client share these cores.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    args.concurrency = [
        int(c) for c in (args.concurrency or ("1,4" if args.quick else "1,4,16")).split(",")
    ]
    args.max_tokens = args.max_tokens or (32 if args.quick else 128)
    args.requests = args.requests or (8 if args.quick else None)
    args.slots = args.slots or max(args.concurrency)
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    return args


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def main() -> None:
    args = parse_args()
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M") + ("-quick" if args.quick else "")
    args.log_dir = args.results_dir / "logs" / stamp
    args.first_text = None  # (server, text) the others' greedy text must equal
    gguf, model = model_files(args.model, args.hf_model)
    specs = server_specs(gguf, model, args)
    results: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.run", *sys.argv[1:]]),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "model": {"name": model.name, "dir": str(model), "gguf": str(gguf) if gguf else None},
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("log_dir", "results_dir", "first_text")
        },
        "servers": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.engine_loop:
            results["engine_loop"] = engine_loop(model, args, tmp)
        for name in args.servers:
            if name not in specs:
                results["servers"][name] = {"error": f"{name} needs a GGUF (--model X.gguf)"}
                continue
            try:
                results["servers"][name] = bench_server(specs[name], args, tmp)
            except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                print(f"{name} failed: {exc}", file=sys.stderr)
                results["servers"][name] = {"error": str(exc)}
    if args.soak:
        from bench.soak import run_soak

        print("== soak", file=sys.stderr, flush=True)
        results["soak"] = run_soak(model, threads=args.threads, log_dir=args.log_dir,
                                   quick=args.quick)  # fmt: skip
    texts = {n: s["greedy_text"] for n, s in results["servers"].items() if "greedy_text" in s}
    results["greedy_check"] = {"texts": texts, "all_equal": len(set(texts.values())) <= 1}
    results["load_average_end"] = load_average()
    results["targets"] = targets(results)
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
