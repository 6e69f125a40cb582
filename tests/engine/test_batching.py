"""Continuous batching on real weights: a request's output never depends on its neighbours."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from r1serve.engine.protocol import GenerationRequest, SamplingParams
from r1serve.engine.registry import build_engine
from r1serve.engine.transformers.engine import LocalEngine
from support.api import make_settings
from support.models import TINY_ANSWER, TINY_R1_HF


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    built = build_engine(
        make_settings(model=str(TINY_R1_HF), max_num_seqs=32, max_prefill_tokens=96)
    )
    yield built.engine


def mixed_requests(engine: LocalEngine, count: int) -> list[GenerationRequest]:
    rng = random.Random(1234)
    words = ["hi", "你好", "what is 2+2?", "tell me a long story about a cat " * 8, "🙂"]
    requests = []
    for i in range(count):
        content = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        prompt = engine.render_chat([{"role": "user", "content": content}])
        kind = i % 4
        params = SamplingParams(
            temperature=0.7 if kind == 3 else 0.0,
            top_p=0.95 if kind == 3 else 1.0,
            seed=rng.randrange(2**32) if kind == 3 else None,
            max_tokens=rng.randint(3, 40),
            stop=("greet",) if kind == 1 else (),
            repetition_penalty=1.5 if kind == 2 else 1.0,
            presence_penalty=0.5 if kind == 2 else 0.0,
        )
        requests.append(GenerationRequest(f"r{i}", prompt.token_ids, params))
    return requests


async def run_one(engine: LocalEngine, req: GenerationRequest) -> tuple[tuple[int, ...], str, str]:
    ids: list[int] = []
    text: list[str] = []
    reason = ""
    async for delta in await engine.submit(req):
        ids.extend(delta.token_ids)
        text.append(delta.text)
        reason = delta.finish_reason or reason
    return tuple(ids), "".join(text), reason


def test_32_mixed_requests_match_solo_runs(engine: LocalEngine) -> None:
    requests = mixed_requests(engine, 32)

    async def main() -> tuple[list[object], list[object]]:
        await engine.start()
        try:
            solo = [await run_one(engine, r) for r in requests]
            together = await asyncio.gather(*(run_one(engine, r) for r in requests))
            return solo, list(together)
        finally:
            await engine.close()

    solo, together = asyncio.run(main())
    assert together == solo
    assert any(TINY_ANSWER in s[1] for s in solo)  # type: ignore[index]
    assert len({s[0] for s in solo}) > 8  # the parameters really gave different outputs


def test_seed_reproduces_a_sampled_reply(engine: LocalEngine) -> None:
    prompt = engine.render_chat([{"role": "user", "content": "hi"}]).token_ids

    def req(rid: str, seed: int) -> GenerationRequest:
        params = SamplingParams(temperature=3.0, seed=seed, max_tokens=12)
        return GenerationRequest(rid, prompt, params)

    async def main() -> list[object]:
        await engine.start()
        try:
            return [await run_one(engine, req(f"s{i}", seed)) for i, seed in enumerate([5, 5, 6])]
        finally:
            await engine.close()

    first, again, other = asyncio.run(main())
    assert first == again
    assert first != other


def test_cancelling_one_never_changes_another(engine: LocalEngine) -> None:
    requests = mixed_requests(engine, 12)

    async def main() -> tuple[list[object], list[object]]:
        await engine.start()
        try:
            solo = [await run_one(engine, r) for r in requests[::2]]
            keep = [asyncio.ensure_future(run_one(engine, r)) for r in requests[::2]]
            victims = [await engine.submit(r) for r in requests[1::2]]
            for stream in victims:
                await stream.__anext__()
                await stream.aclose()  # type: ignore[attr-defined]
            return solo, list(await asyncio.gather(*keep))
        finally:
            await engine.close()

    solo, kept = asyncio.run(main())
    assert kept == solo
