"""tiny-r1.gguf end to end on the llama.cpp engine through the official ``openai`` client: the
exact reasoning/answer split, thinking budgets, log probabilities, cancellation in /metrics and
overload 503."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from r1serve.engine.registry import build_engine
from support.api import LiveServer, make_settings, wait_for
from support.models import TINY_ANSWER, TINY_R1_GGUF, TINY_REASONING

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "hi"}]
# Two slots, one waiting place: the overload test fills all three.
SETTINGS: dict[str, Any] = {
    "model": str(TINY_R1_GGUF),
    "served_model_name": "tiny-r1",
    "max_num_seqs": 2,
    "max_waiting": 1,
    "max_model_len": 2048,
}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    built = build_engine(make_settings(**SETTINGS))
    assert built.engine.kind == "llamacpp"
    with LiveServer(built.engine, make_settings(**SETTINGS)) as live:  # type: ignore[arg-type]
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def metric(server: LiveServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def extra(message: Any) -> dict[str, Any]:
    return message.model_extra or {}


def test_exact_reasoning_and_answer_split(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="tiny-r1", messages=HI, temperature=0)  # type: ignore[arg-type]
    message = result.choices[0].message
    assert message.content == TINY_ANSWER
    assert extra(message)["reasoning_content"] == TINY_REASONING
    assert result.usage is not None and result.usage.completion_tokens_details is not None
    assert result.usage.completion_tokens_details.reasoning_tokens == 14


def test_exact_split_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-r1",
        messages=HI,  # type: ignore[arg-type]
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, usage = [], [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            reasoning.append(extra(choice.delta).get("reasoning_content") or "")
            content.append(choice.delta.content or "")
    assert "".join(reasoning) == TINY_REASONING
    assert "".join(content) == TINY_ANSWER
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 14


@pytest.mark.parametrize("budget", [0, 1, 5])
@pytest.mark.parametrize("stream", [False, True])
def test_a_thinking_budget_gives_exactly_that_many_reasoning_tokens(
    client: openai.OpenAI, budget: int, stream: bool
) -> None:
    fields: dict[str, Any] = {
        "model": "tiny-r1",
        "messages": HI,
        "temperature": 0,
        "max_tokens": 60,
        "logprobs": True,
        "extra_body": {"max_reasoning_tokens": budget},
    }
    if stream:
        chunks = list(
            client.chat.completions.create(
                **fields, stream=True, stream_options={"include_usage": True}
            )
        )
        entries = [
            e for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content or []
        ]
        reasoning = "".join(
            extra(ch.delta).get("reasoning_content") or "" for c in chunks for ch in c.choices
        )
        answer = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        usage = chunks[-1].usage
    else:
        result = client.chat.completions.create(**fields)
        assert result.choices[0].logprobs is not None
        entries = result.choices[0].logprobs.content or []
        reasoning = extra(result.choices[0].message).get("reasoning_content") or ""
        answer = result.choices[0].message.content or ""
        usage = result.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == budget
    tokens = [e.token for e in entries]
    # <think>, the budget's tokens of thinking, the forced end of thinking, then the answer.
    assert tokens[0] == "<think>"
    assert "".join(tokens[1 + budget : 4 + budget]) == "\n</think>\n\n"
    assert TINY_REASONING.startswith(reasoning) and len(reasoning) < len(TINY_REASONING)
    assert budget > 0 or not reasoning
    assert answer  # an answer follows
    assert len(entries) == usage.completion_tokens


def check_logprobs(entries: list[Any], top: int) -> None:
    assert entries
    for entry in entries:
        assert entry.logprob <= 0.0
        assert len(entry.top_logprobs) == top
        assert sum(math.exp(alt.logprob) for alt in entry.top_logprobs) <= 1.0 + 1e-6
        if top:  # greedy: the chosen token is the most likely one, with the same logprob
            assert entry.top_logprobs[0].token == entry.token
            assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-6)


@pytest.mark.parametrize("top", [0, 3, 20])
def test_logprobs(client: openai.OpenAI, top: int) -> None:
    result = client.chat.completions.create(
        model="tiny-r1",
        messages=HI,  # type: ignore[arg-type]
        temperature=0,
        logprobs=True,
        top_logprobs=top,
    )
    assert result.choices[0].logprobs is not None
    entries = result.choices[0].logprobs.content or []
    check_logprobs(entries, top)
    assert result.usage is not None and len(entries) == result.usage.completion_tokens
    assert "".join(e.token for e in entries).startswith("<think>\n" + TINY_REASONING)


def test_logprobs_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-r1",
        messages=HI,  # type: ignore[arg-type]
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    entries = [
        e for c in stream for ch in c.choices if ch.logprobs for e in ch.logprobs.content or []
    ]
    check_logprobs(entries, 2)
    assert "".join(e.token for e in entries).endswith(TINY_ANSWER + "<｜end▁of▁sentence｜>")


def test_completions_logprobs(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model="tiny-r1",
        prompt="hello",
        temperature=0,
        max_tokens=8,
        logprobs=2,
        extra_body={"ignore_eos": True},
    )
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs and logprobs.top_logprobs
    assert len(logprobs.token_logprobs) == 8
    for value, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert value <= 0 and len(top) == 2
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6


def long_stream(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="tiny-r1",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=2000,
        stream=True,
        extra_body={"ignore_eos": True},
    )


def test_cancel_is_visible_in_metrics(client: openai.OpenAI, server: LiveServer) -> None:
    aborted = 'r1serve_requests_finished_total{finish_reason="abort",model="tiny-r1"}'
    before = metric(server, aborted) if aborted in httpx.get(f"{server.url}/metrics").text else 0
    stream = long_stream(client)
    next(iter(stream))
    assert wait_for(lambda: metric(server, "r1serve_requests_running") == 1, timeout=30)
    stream.close()
    assert wait_for(lambda: metric(server, "r1serve_requests_running") == 0, timeout=30)
    assert metric(server, aborted) == before + 1
    assert metric(server, "r1serve_kv_cache_tokens_used") == 0


def test_overload_is_503_with_retry_after(client: openai.OpenAI, server: LiveServer) -> None:
    streams = [long_stream(client) for _ in range(2)]  # both slots
    try:
        for stream in streams:
            next(iter(stream))
        waiting = long_stream(client)  # the one waiting place
        assert wait_for(lambda: metric(server, "r1serve_requests_waiting") == 1, timeout=30)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="tiny-r1", messages=HI)  # type: ignore[arg-type]
        assert refused.value.status_code == 503
        assert int(refused.value.response.headers["retry-after"]) >= 1
        waiting.close()
    finally:
        for stream in streams:
            stream.close()
    assert wait_for(lambda: metric(server, "r1serve_requests_running") == 0, timeout=30)
