"""The upstream engine's wire mapping: recorded streams of vLLM, SGLang, Ollama and raw <think>
tags become the same reasoning and answer; sampling fields and error statuses map across."""

from __future__ import annotations

import json

import pytest

from r1serve.engine.protocol import Constraint, GenerationRequest, PromptOrigin, SamplingParams
from r1serve.engine.text.reasoning import ReasoningSplitter
from r1serve.engine.upstream.wire import (
    ThinkText,
    parse_chunk,
    request_body,
    sampling_fields,
    status_error,
)
from r1serve.errors import RequestError, UpstreamError, UpstreamRequestError
from support.models import TINY_ANSWER, TINY_REASONING
from support.upstreams import transcript_lines

TRANSCRIPTS = [
    "vllm_reasoning.sse",
    "vllm_reasoning_content.sse",
    "sglang.sse",
    "ollama.sse",
    "think_in_content.sse",
    "llamacpp.sse",
    "llamacpp_raw.sse",
]


def replay(name: str) -> tuple[str, str, list[object]]:
    """Reasoning and answer as r1serve's splitter sees the mapped stream, and the usages."""
    think, splitter = ThinkText(), ReasoningSplitter(False)
    reasoning, content, usages = [], [], []
    for line in transcript_lines(name):
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        chunk = parse_chunk(line[5:].strip())
        if chunk.usage is not None:
            usages.append(chunk.usage)
        piece = splitter.feed(think.feed(chunk))
        reasoning.append(piece.reasoning)
        content.append(piece.content)
    tail = splitter.finish()
    return "".join(reasoning) + tail.reasoning, "".join(content) + tail.content, usages


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_reasoning_shape_maps_to_the_same_split(name: str) -> None:
    reasoning, answer, usages = replay(name)
    assert reasoning == TINY_REASONING
    assert answer == TINY_ANSWER
    assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == [(4, 27)]  # type: ignore[attr-defined]


def test_reasoning_that_never_ends_stays_reasoning() -> None:
    think, splitter = ThinkText(), ReasoningSplitter(False)
    text = think.feed(parse_chunk(json.dumps({"choices": [{"delta": {"reasoning": "hm"}}]})))
    text += think.feed(
        parse_chunk(json.dumps({"choices": [{"delta": {}, "finish_reason": "length"}]}))
    )
    piece, tail = splitter.feed(text), splitter.finish()
    assert (piece.reasoning + tail.reasoning, piece.content + tail.content) == ("hm", "")


def test_an_error_chunk_mid_stream_raises_with_the_upstream_message() -> None:
    with pytest.raises(UpstreamError, match="out of KV blocks"):
        parse_chunk(json.dumps({"error": {"message": "out of KV blocks", "code": 500}}))


def test_text_completion_chunks_and_finish_reasons() -> None:
    chunk = parse_chunk(json.dumps({"choices": [{"text": "abc", "finish_reason": "length"}]}))
    assert (chunk.content, chunk.finish_reason) == ("abc", "length")
    assert (
        parse_chunk(
            json.dumps({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})
        ).finish_reason
        == "stop"
    )


def test_sampling_fields_send_only_what_is_not_off() -> None:
    assert sampling_fields(SamplingParams()) == {"temperature": 1.0}
    params = SamplingParams(
        temperature=0.6,
        top_p=0.95,
        top_k=20,
        seed=7,
        max_tokens=9,
        stop=("x",),
        logit_bias={5: -100.0},
        ignore_eos=True,
    )
    assert sampling_fields(params) == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "seed": 7,
        "max_tokens": 9,
        "stop": ["x"],
        "logit_bias": {"5": -100.0},
        "ignore_eos": True,
    }
    penalized = sampling_fields(SamplingParams(repetition_penalty=1.3))
    assert penalized["repetition_penalty"] == penalized["repeat_penalty"] == 1.3  # llama.cpp's
    schema = Constraint("json_schema", '{"type": "object"}', after="</think>")
    assert sampling_fields(SamplingParams(constraint=schema))["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    with pytest.raises(RequestError):
        sampling_fields(SamplingParams(constraint=Constraint("regex", "a+")))
    with pytest.raises(RequestError):
        sampling_fields(SamplingParams(logprobs=2))


def test_request_body_streams_with_usage_to_the_right_route() -> None:
    chat = GenerationRequest(
        "r", (0,), SamplingParams(), origin=PromptOrigin(({"role": "user", "content": "hi"},))
    )
    path, body = request_body("m", chat)
    assert path == "chat/completions" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    raw = GenerationRequest("r", (0,), SamplingParams(), origin=PromptOrigin(text="Once"))
    assert request_body("m", raw)[0] == "completions"
    with pytest.raises(RequestError):
        request_body("m", GenerationRequest("r", (0,), SamplingParams()))


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, UpstreamRequestError, 400),
        (404, UpstreamRequestError, 404),
        (422, UpstreamRequestError, 422),
        (401, UpstreamError, 502),
        (429, UpstreamError, 503),
        (500, UpstreamError, 502),
        (503, UpstreamError, 503),
        (504, UpstreamError, 504),
    ],
)
def test_upstream_statuses_keep_their_class(status: int, kind: type, code: int) -> None:
    error = status_error(status, {"error": {"message": "said the upstream"}}, "upstream replica #1")
    assert type(error) is kind and error.status_code == code
    assert "said the upstream" in error.message
