"""The raw engine loop: r1serve's engine in-process, no HTTP, one stream at a time.

The same prompts (same seeded order) and the same output length as the HTTP sweep at
concurrency 1, greedy with EOS ignored so every request makes exactly ``--max-tokens`` tokens.
Its tok/s is what "one stream through the HTTP API" is measured against.

    python -m bench.engine_loop --model DIR [--threads 2] [--requests 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from r1serve.client.bench import load_prompts
from r1serve.engine.protocol import GenerationRequest, SamplingParams
from r1serve.engine.registry import build_engine
from r1serve.engine.transformers.engine import LocalEngine
from r1serve.settings import Settings


async def one_stream(engine: LocalEngine, request: GenerationRequest) -> dict[str, float]:
    """Run one request; its prefill (time to first token), duration and token count."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for delta in await engine.submit(request):
        if first is None and delta.token_ids:
            first = time.perf_counter()
        if delta.usage is not None:
            tokens = delta.usage.completion_tokens
    ended = time.perf_counter()
    first = ended if first is None else first
    return {"prefill_s": first - started, "seconds": ended - started, "tokens": tokens}


async def measure(
    engine: LocalEngine, *, prompts: str, requests: int, max_tokens: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Warm up, then run ``requests`` streams back to back."""
    order = load_prompts(prompts)
    random.Random(seed).shuffle(order)  # the order `r1serve bench --seed` uses
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

    def request(index: int) -> GenerationRequest:
        prompt = engine.render_chat(list(order[index % len(order)].messages))
        return GenerationRequest(f"loop-{index}", prompt.token_ids, params)

    await engine.start()
    try:
        for index in range(warmup):
            await one_stream(engine, request(index))
        started = time.perf_counter()
        runs = [await one_stream(engine, request(index)) for index in range(requests)]
        wall = time.perf_counter() - started
    finally:
        await engine.close()
    tokens = sum(int(r["tokens"]) for r in runs)
    return {
        "requests": requests,
        "max_tokens": max_tokens,
        "output_tokens": tokens,
        "wall_s": wall,
        "output_tokens_per_s": tokens / wall,
        "prefill_s_median": statistics.median(r["prefill_s"] for r in runs),
        "decode_tokens_per_s_median": statistics.median(
            (r["tokens"] - 1) / (r["seconds"] - r["prefill_s"]) for r in runs
        ),
        "runs": runs,
    }


def run(
    model: str,
    *,
    threads: int,
    prompts: str,
    requests: int,
    max_tokens: int,
    warmup: int,
    seed: int,
) -> dict[str, Any]:
    """Load the model as ``r1serve serve`` would and measure the loop."""
    settings = Settings(_env_file=None, model=model, dtype="float32", device="cpu", threads=threads)
    built = build_engine(settings)
    result = asyncio.run(
        measure(
            built.engine,
            prompts=prompts,
            requests=requests,
            max_tokens=max_tokens,
            warmup=warmup,
            seed=seed,
        )
    )
    result["engine"] = built.engine.kind
    result["summary"] = list(built.summary)
    result["model"] = built.engine.model_name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="r1serve's engine loop without HTTP.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", default="chat")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write JSON here")
    args = parser.parse_args()
    result = run(
        args.model,
        threads=args.threads,
        prompts=args.prompts,
        requests=args.requests,
        max_tokens=args.max_tokens,
        warmup=args.warmup,
        seed=args.seed,
    )
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
