"""The generation layer without a wire format: n choices, usage totals, reasoning, the meter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine
from r1serve.engine.protocol import Usage
from r1serve.errors import EngineError
from r1serve.generation import Generation, Output, SamplingRequest, UsageTotal, collect
from support.api import HI, sse_payloads

Build = Callable[..., tuple[TestClient, FakeEngine]]
REPLY = "<think>\nHmm.\n</think>\n\nThree words here."


async def _outputs(*items: Output) -> AsyncIterator[Output]:
    for item in items:
        yield item


def test_usage_total_counts_a_shared_prompt_once_and_every_choice() -> None:
    total = UsageTotal(lambda index: index // 2)  # two prompts, two choices each
    for index in range(4):
        total.add(Output(index, content="x", tokens=1))
        total.add(Output(index, finish_reason="stop", usage=Usage(10 + index // 2, 3, 1)))
    assert total.as_usage() == Usage(10 + 11, 12, 4)
    assert total.streamed == 4 and total.status() == "stop"
    cut = UsageTotal()
    cut.add(Output(0, finish_reason="length", usage=Usage(5, 2)))
    cut.add(Output(1, finish_reason="stop", usage=Usage(5, 1)))
    assert cut.status() == "length" and cut.as_usage() == Usage(5, 3)
    assert UsageTotal().status() == "cancelled"


def test_collect_joins_each_choice_and_raises_on_an_engine_failure() -> None:
    done = asyncio.run(
        collect(
            _outputs(
                Output(1, reasoning="r", tokens=1),
                Output(0, content="a", tokens=1),
                Output(1, content="b", finish_reason="stop", usage=Usage(4, 2, 1)),
                Output(0, content="c", finish_reason="length", usage=Usage(4, 2)),
            ),
            2,
        )
    )
    assert [(c.thinking, c.text, c.finish_reason) for c in done.choices] == [
        ("", "ac", "length"),
        ("r", "b", "stop"),
    ]
    assert done.usage == Usage(4, 4, 1)
    failing = _outputs(Output(0, content="a"), Output(0, finish_reason="error"))
    with pytest.raises(EngineError):
        asyncio.run(collect(failing, 1))


@dataclass
class RecordingMeter:
    """A ``generation.Meter`` that keeps what it saw."""

    seen: list[Output] = field(default_factory=list)
    prompt_tokens: int | None = None
    model: str | None = None

    def watch(
        self, outputs: AsyncIterator[Output], *, prompt_lens: Sequence[int], n: int, model: str
    ) -> AsyncIterator[Output]:
        self.prompt_tokens, self.model = sum(prompt_lens), model

        async def watched() -> AsyncIterator[Output]:
            async for out in outputs:
                self.seen.append(out)
                yield out

        return watched()


def test_n_choices_split_reasoning_and_pass_the_meter_they_are_given() -> None:
    engine = FakeEngine(REPLY)
    generation = Generation(engine)
    meter = RecordingMeter()

    async def scenario() -> None:
        await engine.start()
        try:
            prompt = await generation.prepare_chat([{"role": "user", "content": "hi"}])
            params = generation.sampling(SamplingRequest(temperature=0.0, max_tokens=50))
            done = await generation.run("t", [prompt], params, n=3, meter=meter)
        finally:
            await engine.close()
        assert [c.text for c in done.choices] == ["Three words here."] * 3
        assert [c.thinking.strip() for c in done.choices] == ["Hmm."] * 3
        per_choice = [c.usage for c in done.choices]
        assert all(u is not None and u.prompt_tokens == len(prompt.token_ids) for u in per_choice)
        assert done.usage.prompt_tokens == len(prompt.token_ids)  # once, not three times
        assert done.usage.completion_tokens == sum(u.completion_tokens for u in per_choice if u)
        assert meter.prompt_tokens == len(prompt.token_ids) and meter.model == engine.model_name
        assert sum(out.tokens for out in meter.seen) == done.usage.completion_tokens

    asyncio.run(scenario())


def test_sampling_fills_the_models_defaults_then_the_servers() -> None:
    engine = FakeEngine("x")
    defaults = {"temperature": 0.6, "max_reasoning_tokens": 9}
    generation = Generation(engine, default_sampling=defaults)
    params = generation.sampling(SamplingRequest(top_k=-1, seed=-1, reasoning_effort="low"))
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 1.0, 0)
    assert params.seed == 2**64 - 1 and params.max_reasoning_tokens == 1024
    assert generation.sampling(SamplingRequest()).max_reasoning_tokens == 9


def test_n_choices_usage_on_the_wire_counts_the_prompt_once(make_client: Build) -> None:
    client, _ = make_client(REPLY)
    one = client.post("/v1/chat/completions", json={"messages": HI}).json()["usage"]
    three = client.post("/v1/chat/completions", json={"messages": HI, "n": 3}).json()["usage"]
    assert three["prompt_tokens"] == one["prompt_tokens"]
    assert three["completion_tokens"] == 3 * one["completion_tokens"]
    reasoning = three["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning == 3 * one["completion_tokens_details"]["reasoning_tokens"] > 0
    body = {"messages": HI, "n": 3, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        payloads = sse_payloads(response.read().decode())
    assert json.loads(payloads[-2])["usage"] == three  # streamed and whole agree
    # Text completions: one prompt with n=2 counts once, whole or streamed.
    whole = client.post("/v1/completions", json={"prompt": "Once", "n": 2}).json()["usage"]
    single = client.post("/v1/completions", json={"prompt": "Once"}).json()["usage"]
    assert whole["prompt_tokens"] == single["prompt_tokens"]
    stream = {"prompt": "Once", "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=stream) as response:
        payloads = sse_payloads(response.read().decode())
    assert json.loads(payloads[-2])["usage"] == whole
