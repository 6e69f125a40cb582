"""One suite of cases for every backend: fake (scripted), transformers and llama.cpp (tiny R1).

Each engine has 2 slots, a waiting queue of 1 and a 512-token context, and answers the "hello"
prompt with the tiny model's one known reply (the fake is scripted to say the same). A "long"
request never ends on its own within the context (no EOS), for cancel, overload and deadlines.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.protocol import (
    Constraint,
    Delta,
    Engine,
    FinishedRequest,
    GenerationRequest,
    SamplingParams,
)
from r1serve.engine.registry import build_engine
from r1serve.engine.transformers.scheduler import SchedulerConfig
from r1serve.errors import ContextLengthError, OverloadedError, RequestError
from support.api import make_settings
from support.models import TINY_PROMPT_IDS, TINY_R1_GGUF, TINY_R1_HF, TINY_RAW

pytestmark = pytest.mark.slow

CONTEXT = 512
LONG = "tell me everything"


def _fake_reply(prompt: str) -> FakeReply:
    if LONG in prompt:
        # Characters split over tokens, so the UTF-8 case checks the detokenizer for real.
        smile = "🙂".encode()
        chunks = ["caf", b"\xc3", b"\xa9", " ", smile[:1], smile[1:3], smile[3:], " "]
        return FakeReply(chunks=chunks, eos=False, repeat=True, delay_s=0.02)
    return FakeReply(TINY_RAW)


class Backend:
    """An engine under test, how to ask it the known prompt, and what it reported finishing."""

    def __init__(self, name: str, engine: Engine, hello: tuple[int, ...]) -> None:
        self.name = name
        self.engine = engine
        self.hello = hello
        self.finished: dict[str, FinishedRequest] = {}
        engine.add_finish_listener(lambda done: self.finished.__setitem__(done.request_id, done))

    def request(self, rid: str, **params: Any) -> GenerationRequest:
        params.setdefault("temperature", 0.0)
        timeout = params.pop("timeout_s", None)
        return GenerationRequest(rid, self.hello, SamplingParams(**params), timeout_s=timeout)

    def long(self, rid: str, **params: Any) -> GenerationRequest:
        """A request that runs until cancelled, its deadline, or max_tokens."""
        params.setdefault("max_tokens", CONTEXT - 64)
        params.setdefault("temperature", 0.0)
        if self.name == "fake":
            prompt = self.engine.render_chat([{"role": "user", "content": LONG}]).token_ids
            timeout = params.pop("timeout_s", None)
            return GenerationRequest(rid, prompt, SamplingParams(**params), timeout_s=timeout)
        return self.request(rid, ignore_eos=True, **params)


def _build(name: str) -> Engine:
    if name == "fake":
        return FakeEngine(
            _fake_reply,
            max_slots=2,
            max_seq_len=CONTEXT,
            context_length=CONTEXT,
            scheduler_config=SchedulerConfig(max_waiting=1),
        )
    model = TINY_R1_HF if name == "transformers" else TINY_R1_GGUF
    settings = make_settings(
        model=str(model), engine=name, max_num_seqs=2, max_waiting=1, max_model_len=CONTEXT
    )
    built = build_engine(settings)
    assert built.summary[0] == f"engine: {name}"
    return built.engine


@pytest.fixture(scope="module", params=["fake", "transformers", "llamacpp"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    engine = _build(request.param)
    assert engine.kind == request.param
    hello = (
        engine.render_chat([{"role": "user", "content": "hi"}]).token_ids
        if request.param == "fake"
        else TINY_PROMPT_IDS
    )
    asyncio.run(engine.start())
    yield Backend(request.param, engine, hello)
    asyncio.run(engine.close())


async def collect(engine: Engine, req: GenerationRequest) -> list[Delta]:
    return [delta async for delta in await engine.submit(req)]


def joined(deltas: list[Delta]) -> tuple[str, list[int]]:
    return "".join(d.text for d in deltas), [t for d in deltas for t in d.token_ids]


async def until_idle(engine: Engine, timeout: float = 60.0) -> None:
    """Wait on progress: the engine reports nothing running or waiting."""
    end = time.monotonic() + timeout
    while engine.stats().running or engine.stats().waiting:
        assert time.monotonic() < end, f"engine still busy: {engine.stats()}"
        await asyncio.sleep(0.02)


def test_deltas_join_to_the_full_reply_with_usage(backend: Backend) -> None:
    deltas = asyncio.run(collect(backend.engine, backend.request("full")))
    text, ids = joined(deltas)
    assert text == TINY_RAW
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.stop_reason in backend.engine.tokenizer.eos_token_ids
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(backend.hello)
    assert last.usage.completion_tokens == len(ids)
    done = backend.finished["full"]
    assert (done.reason, done.prompt_tokens, done.completion_tokens) == (
        "stop",
        len(backend.hello),
        len(ids),
    )
    t = done.timings
    assert t.admitted is not None and t.first_token is not None and t.finished is not None
    assert t.submitted <= t.admitted <= t.first_token <= t.finished


def test_max_tokens_ends_with_length(backend: Backend) -> None:
    deltas = asyncio.run(collect(backend.engine, backend.request("len", max_tokens=5)))
    text, ids = joined(deltas)
    assert deltas[-1].finish_reason == "length"
    assert len(ids) == 5 and deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens == 5
    assert TINY_RAW.startswith(text) and text


def test_stop_string_across_tokens_is_cut_and_never_sent(backend: Backend) -> None:
    stop = "greet them"  # "greet" and " them" are two tokens
    deltas = asyncio.run(collect(backend.engine, backend.request("stop", stop=(stop,))))
    text, _ = joined(deltas)
    assert text == TINY_RAW.split(stop)[0]
    assert (deltas[-1].finish_reason, deltas[-1].stop_reason) == ("stop", stop)


def test_stop_token_id_ends_the_reply_before_its_text(backend: Backend) -> None:
    (close_think,) = backend.engine.tokenizer.encode("</think>")
    req = backend.request("stop-id", stop_token_ids=(close_think,))
    deltas = asyncio.run(collect(backend.engine, req))
    text, ids = joined(deltas)
    assert text == TINY_RAW.split("</think>")[0]
    assert ids[-1] == close_think
    assert (deltas[-1].finish_reason, deltas[-1].stop_reason) == ("stop", close_think)


def test_utf8_is_never_split(backend: Backend) -> None:
    # Sampled text may hold any bytes; every delta must still be whole characters, and the
    # pieces must add up to what the tokenizer makes of all the ids together.
    req = backend.long("utf8", max_tokens=40, temperature=1.0, seed=7)
    deltas = asyncio.run(collect(backend.engine, req))
    text, ids = joined(deltas)
    tokenizer = backend.engine.tokenizer
    assert text == tokenizer.decode(ids)
    if backend.name == "fake":
        assert "café 🙂" in text
    for delta in deltas:
        delta.text.encode("utf-8")  # no lone surrogates
        if "\ufffd" not in text:
            assert "\ufffd" not in delta.text


def test_cancel_frees_the_slot(backend: Backend) -> None:
    async def case() -> None:
        stream = await backend.engine.submit(backend.long("cancel"))
        first = await stream.__anext__()
        assert first.finish_reason is None
        assert backend.engine.stats().running == 1
        await stream.aclose()
        await until_idle(backend.engine)

    asyncio.run(case())
    assert backend.finished["cancel"].reason == "abort"
    assert backend.engine.stats().kv_tokens_used in (0, None)


def test_overload_is_refused_before_any_output(backend: Backend) -> None:
    async def case() -> None:
        streams = [await backend.engine.submit(backend.long(f"busy{i}")) for i in range(3)]
        with pytest.raises(OverloadedError) as refused:
            await backend.engine.submit(backend.long("busy-refused"))
        assert refused.value.status_code == 503 and refused.value.retry_after
        assert backend.engine.stats().rejected >= 1
        for stream in streams:
            await stream.aclose()
        await until_idle(backend.engine)

    asyncio.run(case())
    assert "busy-refused" not in backend.finished


def test_deadline_ends_with_timeout(backend: Backend) -> None:
    deltas = asyncio.run(collect(backend.engine, backend.long("late", timeout_s=0.3)))
    assert deltas[-1].finish_reason == "timeout"
    assert deltas[-1].usage is not None
    assert backend.finished["late"].reason == "timeout"


def test_max_tokens_is_checked_against_the_context(backend: Backend) -> None:
    engine = backend.engine
    assert engine.context_length == CONTEXT
    room = CONTEXT - len(backend.hello)
    assert engine.resolve_max_tokens(len(backend.hello), None) == room
    with pytest.raises(ContextLengthError):
        asyncio.run(engine.submit(backend.request("too-long", max_tokens=room + 1)))
    with pytest.raises(ContextLengthError):
        asyncio.run(engine.submit(GenerationRequest("huge", (1,) * CONTEXT, SamplingParams())))
    assert engine.stats().running == 0


@pytest.mark.parametrize("budget", [0, 4])
def test_a_thinking_budget_ends_the_reasoning_at_exactly_that_many_tokens(
    backend: Backend, budget: int
) -> None:
    req = backend.request(f"budget{budget}", max_reasoning_tokens=budget, max_tokens=60)
    deltas = asyncio.run(collect(backend.engine, req))
    text, ids = joined(deltas)
    usage = deltas[-1].usage
    assert usage is not None and usage.reasoning_tokens == budget
    assert usage.completion_tokens == len(ids)
    opened, _, rest = text.partition("<think>")
    thought, closed, answer = rest.partition("\n</think>\n\n")
    assert (opened, closed) == ("", "\n</think>\n\n"), text
    # The thought is the reply's own start (the fake's script goes on after the forced text).
    assert TINY_RAW.startswith("<think>" + thought) and (budget > 0 or not thought)
    assert answer  # the answer follows the forced end of thinking


def test_logprobs_come_one_per_token_with_the_chosen_one(backend: Backend) -> None:
    deltas = asyncio.run(collect(backend.engine, backend.request("lp", logprobs=3)))
    text, _ = joined(deltas)
    assert text == TINY_RAW
    for delta in deltas:
        assert [lp.token_id for lp in delta.logprobs] == list(delta.token_ids)
        for lp in delta.logprobs:
            assert lp.logprob <= 0.0 and len(lp.top) == 3
            values = [value for _, value in lp.top]
            assert values == sorted(values, reverse=True)
            assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
            assert lp.top[0] == (lp.token_id, lp.logprob)  # greedy: the most likely token
    plain = asyncio.run(collect(backend.engine, backend.request("no-lp")))
    assert all(not d.logprobs for d in plain)


def test_a_constraint_applies_only_after_the_reasoning(backend: Backend) -> None:
    if backend.name == "fake":
        pytest.skip("the fake engine checks constraints but has no logits to mask")
    constraint = Constraint("regex", r"\n\n(yes|no)", after="</think>")
    deltas = asyncio.run(collect(backend.engine, backend.request("c", constraint=constraint)))
    text, _ = joined(deltas)
    reasoning, closed, answer = text.partition("</think>")
    assert TINY_RAW.startswith(reasoning + closed)  # the reasoning ran free
    assert answer in ("\n\nyes", "\n\nno") and deltas[-1].finish_reason == "stop"


def test_characters_spelled_in_byte_tokens_come_out_whole(backend: Backend) -> None:
    # tiny-r1 has no token for "▁" (nor for "▁é" together): the constraint makes the model
    # spell them with tokens that end mid-character, which llama.cpp streams no chunk for.
    if backend.name == "fake":
        pytest.skip("the fake engine checks constraints but has no logits to mask")
    constraint = Constraint("regex", "tool\u2581call\u2581é")
    deltas = asyncio.run(collect(backend.engine, backend.request("bytes", constraint=constraint)))
    text, ids = joined(deltas)
    assert text == "tool\u2581call\u2581é" and deltas[-1].finish_reason == "stop"
    assert backend.engine.tokenizer.decode(ids) == text
    usage = deltas[-1].usage
    assert usage is not None and usage.completion_tokens == len(ids)


def test_a_constraint_that_cannot_compile_is_refused_before_any_output(backend: Backend) -> None:
    bad = Constraint("json_schema", '{"type": "object", "properties": 3}')
    with pytest.raises(RequestError):
        asyncio.run(backend.engine.submit(backend.request("bad", constraint=bad)))
    assert "bad" not in backend.finished
