"""How fast r1serve's engine prefills a wave of prompts that arrive at the same moment.

A wave of B chat prompts is submitted at once to an idle engine, each asking for one token, so
the wave's wall time is the time to prefill all B prompts (the TTFT of its last request). Prompt
tokens per second at each wave size tell whether a TTFT bound is within the machine's reach.

    python -m bench.prefill_rate --model DIR [--threads 2] [--waves 1,4,16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from r1serve.client.bench import load_prompts
from r1serve.engine.protocol import GenerationRequest, SamplingParams
from r1serve.engine.registry import build_engine
from r1serve.engine.transformers.engine import LocalEngine
from r1serve.settings import Settings


async def one_wave(engine: LocalEngine, prompts: list[tuple[int, ...]], tag: str) -> float:
    """Submit every prompt at once; seconds until the last one has its token."""
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)

    async def drain(index: int, tokens: tuple[int, ...]) -> None:
        request = GenerationRequest(f"{tag}-{index}", tokens, params)
        async for _ in await engine.submit(request):
            pass

    started = time.perf_counter()
    await asyncio.gather(*(drain(i, p) for i, p in enumerate(prompts)))
    return time.perf_counter() - started


async def measure(
    engine: LocalEngine, *, prompts: str, waves: list[int], repeat: int
) -> list[dict[str, Any]]:
    """For each wave size: median wall time and prompt tokens per second over ``repeat`` runs."""
    rendered = [engine.render_chat(list(p.messages)).token_ids for p in load_prompts(prompts)]
    results = []
    await engine.start()
    try:
        await one_wave(engine, rendered[:2], "warmup")
        for size in waves:
            batch = [rendered[i % len(rendered)] for i in range(size)]
            # Distinct requests of a wave share no prefix, so prefix caching cannot skip work;
            # repeated waves reuse prompts, so each repeat gets a one-token unique head.
            times = []
            for run in range(repeat):
                unique = [(1000 + run * size + i, *p) for i, p in enumerate(batch)]
                times.append(await one_wave(engine, unique, f"w{size}-{run}"))
            wall = statistics.median(times)
            tokens = sum(len(p) + 1 for p in batch)
            results.append(
                {
                    "wave": size,
                    "prompt_tokens": tokens,
                    "wall_s": wall,
                    "tokens_per_s": tokens / wall,
                }
            )
    finally:
        await engine.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Prefill rate of r1serve's engine per wave size.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", default="chat")
    parser.add_argument("--waves", default="1,4,16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="write JSON here")
    args = parser.parse_args()
    settings = Settings(
        _env_file=None, model=args.model, dtype="float32", device="cpu", threads=args.threads
    )
    built = build_engine(settings)
    waves = [int(w) for w in args.waves.split(",")]
    rows = asyncio.run(measure(built.engine, prompts=args.prompts, waves=waves, repeat=args.repeat))
    for row in rows:
        print(
            f"wave {row['wave']:>3}: {row['prompt_tokens']:>5} prompt tokens in "
            f"{row['wall_s'] * 1000:7.0f} ms = {row['tokens_per_s']:6.0f} tok/s"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
