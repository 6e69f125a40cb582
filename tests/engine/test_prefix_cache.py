"""Prefix caching: a shared prompt prefix is computed once, and outputs do not change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from r1serve.engine.protocol import GenerationRequest, SamplingParams
from r1serve.engine.registry import build_engine
from r1serve.engine.transformers.engine import LocalEngine
from r1serve.engine.transformers.native import NativeRunner
from support.api import make_settings
from support.models import TINY_ANSWER, TINY_R1_HF

SYSTEM = "You are a careful assistant. " * 20  # a long shared system prompt


def engine_with(prefix_caching: bool) -> LocalEngine:
    settings = make_settings(model=str(TINY_R1_HF), max_num_seqs=4, prefix_caching=prefix_caching)
    return build_engine(settings).engine


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[LocalEngine, LocalEngine]]:
    yield engine_with(True), engine_with(False)


def conversation(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


async def reply(engine: LocalEngine, messages: list[dict[str, str]], rid: str) -> str:
    prompt = engine.render_chat(messages)
    params = SamplingParams(temperature=0.0, max_tokens=40)
    request = GenerationRequest(rid, prompt.token_ids, params)
    return "".join([d.text async for d in await engine.submit(request)])


def run_all(engine: LocalEngine, questions: list[str], concurrent: bool) -> list[str]:
    async def main() -> list[str]:
        await engine.start()
        try:
            calls = [reply(engine, conversation(q), f"q{i}") for i, q in enumerate(questions)]
            if concurrent:
                return list(await asyncio.gather(*calls))
            return [await call for call in calls]
        finally:
            await engine.close()

    return asyncio.run(main())


QUESTIONS = ["hi", "你好", "what is 2+2?", "tell me a joke", "bye"]


def test_shared_system_prompt_is_reused_and_replies_match(
    engines: tuple[LocalEngine, LocalEngine],
) -> None:
    cached, plain = engines
    prompt_len = len(cached.render_chat(conversation("hi")).token_ids)
    before = cached.stats().prefix_cache_hits
    with_cache = run_all(cached, QUESTIONS, concurrent=False)
    reused = cached.stats().prefix_cache_hits - before
    # every question after the first finds the system prompt in a finished sequence's row
    assert reused >= (len(QUESTIONS) - 1) * (prompt_len - 8)
    assert with_cache == run_all(plain, QUESTIONS, concurrent=False)
    assert plain.stats().prefix_cache_hits == 0
    assert all(TINY_ANSWER in text for text in with_cache)


def test_concurrent_requests_reuse_running_rows(
    engines: tuple[LocalEngine, LocalEngine],
) -> None:
    cached, plain = engines
    questions = QUESTIONS * 2  # more than the 4 slots: rows are reused while others run
    assert run_all(cached, questions, concurrent=True) == run_all(plain, questions, True)


def test_an_identical_prompt_still_computes_its_last_token(
    engines: tuple[LocalEngine, LocalEngine],
) -> None:
    cached, _ = engines
    run_all(cached, ["same"], concurrent=False)  # its prompt + reply stay in a free row
    runner = cached.runner
    assert isinstance(runner, NativeRunner)
    prompt = list(cached.render_chat(conversation("same")).token_ids)
    slot = runner.acquire()
    try:
        assert runner.reuse_prefix(slot, prompt) == len(prompt) - 1
    finally:
        runner.release(slot)
