"""Ollama's ``format``, ``tools`` and ``think`` levels with the official ``ollama`` client: over
the scripted fake engine (template tool-call forms, awkward chunks) and on tiny-r1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import pytest

from r1serve.api import ollama_tools
from r1serve.api.ollama_schemas import ChatRequest
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.protocol import Constraint
from r1serve.engine.registry import build_engine
from r1serve.engine.text.tokenizer import read_tokenizer_dir
from r1serve.engine.text.tool_format import ToolFormat, write_call, write_calls
from support.api import LiveServer, make_settings
from support.models import (
    R1_THINK_TEMPLATE,
    TINY_ANSWER,
    TINY_R1_GGUF,
    TINY_R1_HF,
    TINY_REASONING,
    TINY_REPLY_IDS,
)

Start = Callable[..., LiveServer]
HI = [{"role": "user", "content": "hi"}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "now", "description": "The time"}}
PARIS = {"city": 'Paris, "Île" ✓', "unit": "C"}
THINK = "<think>\nThe user wants weather.\n</think>\n\n"
ANSWER_START = 9707  # "Hello", tiny-r1's first answer token
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def r1_template() -> str | None:
    return read_tokenizer_dir(TINY_R1_HF).chat_template


TEMPLATE_FORMS: dict[str, tuple[Callable[[], str | None], ToolFormat]] = {
    "generic": (lambda: None, "hermes"),
    "r1": (r1_template, "deepseek"),
    "qwen2.5": (lambda: (TEMPLATES / "qwen2.5-tools.jinja").read_text(), "hermes"),
    "llama3.1": (lambda: (TEMPLATES / "llama3.1-tools.jinja").read_text(), "llama3"),
}


def awkward(text: str, sizes: tuple[int, ...] = (1, 4, 2, 7, 3)) -> list[bytes]:
    """``text`` cut into byte chunks of cycling sizes (through multi-byte characters too)."""
    data, pieces, at, i = text.encode(), [], 0, 0
    while at < len(data):
        pieces.append(data[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return pieces


def calls_text(form: ToolFormat, calls: list[tuple[str, dict[str, Any]]]) -> str:
    return write_calls(form, [(name, json.dumps(args, ensure_ascii=False)) for name, args in calls])


def client_for(server: LiveServer) -> ollama.Client:
    return ollama.Client(host=server.url)


def engine_of(server: LiveServer) -> FakeEngine:
    return server.engine


# ---- format ----------------------------------------------------------------------------


def test_format_json_and_a_schema_constrain_decoding(live_server: Start) -> None:
    server = live_server(FakeReply('{"name": "Ada", "age": 36}'))
    client = client_for(server)
    reply = client.chat(model="fake-model", messages=HI, format="json")
    assert json.loads(reply.message.content or "") == {"name": "Ada", "age": 36}
    assert engine_of(server).constraints_seen[-1] == Constraint("json_object", "")
    parts = list(client.chat(model="fake-model", messages=HI, format=PERSON, stream=True))
    assert json.loads("".join(p.message.content or "" for p in parts))["name"] == "Ada"
    assert engine_of(server).constraints_seen[-1] == Constraint("json_schema", json.dumps(PERSON))
    generated = client.generate(model="fake-model", prompt="a person", format=PERSON)
    assert json.loads(generated.response)["age"] == 36
    assert len(engine_of(server).constraints_seen) == 3
    client.chat(model="fake-model", messages=HI, format="")  # Ollama's "no format"
    assert len(engine_of(server).constraints_seen) == 3


def test_format_applies_after_the_reasoning_of_an_r1_template(live_server: Start) -> None:
    server = live_server(FakeReply("Thinking.\n</think>\n\n{}"), think_template=True)
    reply = client_for(server).chat(model="fake-model", messages=HI, format="json", think=True)
    assert (reply.message.thinking, reply.message.content) == ("Thinking.", "{}")
    assert engine_of(server).constraints_seen[-1] == Constraint("json_object", "", "</think>")


def test_a_schema_that_cannot_compile_is_a_400_before_generating(live_server: Start) -> None:
    server = live_server()
    client = client_for(server)
    bad = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "x"}}}
    with pytest.raises(ollama.ResponseError) as whole:
        client.generate(model="fake-model", prompt="x", format=bad)
    with pytest.raises(ollama.ResponseError) as streamed:
        next(iter(client.chat(model="fake-model", messages=HI, format=bad, stream=True)))
    for refused in (whole, streamed):
        assert refused.value.status_code == 400
        assert refused.value.error.startswith("format: the constraint cannot be compiled")
    assert not engine_of(server).finished  # nothing ran


# ---- tools -----------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATE_FORMS)
def test_streamed_tool_calls_arrive_whole(live_server: Start, template: str) -> None:
    source, form = TEMPLATE_FORMS[template]
    calls = [("get_weather", PARIS), ("now", {})]
    if form == "llama3":
        calls = calls[:1]  # Llama 3's form: the whole answer is the call
    server = live_server(FakeReply(chunks=awkward(THINK + calls_text(form, calls))),
                         chat_template=source())  # fmt: skip
    parts = list(
        client_for(server).chat(
            model="fake-model", messages=ASK, tools=[WEATHER, CLOCK], stream=True
        )
    )
    with_calls = [p for p in parts if p.message.tool_calls]
    got = [(c.function.name, dict(c.function.arguments)) for p in with_calls
           for c in p.message.tool_calls or []]  # fmt: skip
    assert got == calls
    assert all(not p.done for p in with_calls) and parts[-1].done
    assert parts[-1].done_reason == "stop"
    assert "".join(p.message.thinking or "" for p in parts) == "The user wants weather."
    assert "".join(p.message.content or "" for p in parts) == ""


def test_whole_reply_has_message_tool_calls_in_ollamas_shape(live_server: Start) -> None:
    text = "Let me look." + calls_text("hermes", [("get_weather", PARIS)])
    server = live_server(FakeReply(chunks=awkward(text)))
    body = {"model": "fake-model", "messages": ASK, "tools": [WEATHER], "stream": False}
    raw = httpx.post(f"{server.url}/api/chat", json=body, timeout=30).json()
    assert raw["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": PARIS}}
    ]
    assert raw["message"]["content"] == "Let me look." and raw["done_reason"] == "stop"


def test_broken_calls_stay_content(live_server: Start) -> None:
    answer = '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'
    server = live_server(FakeReply(chunks=awkward(answer)))
    reply = client_for(server).chat(model="fake-model", messages=ASK, tools=[WEATHER])
    assert reply.message.content == answer and not reply.message.tool_calls


@pytest.mark.parametrize("template", ["generic", "r1", "qwen2.5"])
def test_agent_round_trip_renders_the_call_and_its_result(
    live_server: Start, template: str
) -> None:
    source, form = TEMPLATE_FORMS[template]
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        if "18 C, sunny" in prompt:
            return FakeReply("It is 18 C and sunny in Paris.")
        return FakeReply(calls_text(form, [("get_weather", {"city": "Paris"})]))

    server = live_server(reply, chat_template=source())
    client = client_for(server)
    messages: list[Any] = [*ASK]
    first = client.chat(model="fake-model", messages=messages, tools=[WEATHER])
    [call] = first.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", {"city": "Paris"})
    messages.append(first.message)
    messages.append({"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"})
    final = client.chat(model="fake-model", messages=messages, tools=[WEATHER])
    assert final.message.content == "It is 18 C and sunny in Paris."
    assert not final.message.tool_calls and final.done_reason == "stop"
    # The earlier call in the template's own form, then its result where the template puts it.
    prompt = prompts[-1]
    call_at = prompt.index(write_call(form, "get_weather", '{"city": "Paris"}'))
    result = "18 C, sunny" if template == "r1" else "<tool_response>\n18 C, sunny\n</tool_response>"
    assert prompt.index("Weather in Paris?") < call_at < prompt.index(result)


def test_tool_results_answer_the_calls_they_name() -> None:
    body = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [
                *ASK,
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "now", "arguments": {}}},
                ]},
                {"role": "tool", "content": "12:00", "tool_name": "now"},
                {"role": "tool", "content": "18 C"},
            ],
        }
    )  # fmt: skip
    _, call, clock, weather = ollama_tools.chat_messages(body)
    assert call["content"] is None
    assert [c["function"] for c in call["tool_calls"]] == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"name": "now", "arguments": "{}"},
    ]
    ids = [c["id"] for c in call["tool_calls"]]
    assert clock == {"role": "tool", "content": "12:00", "tool_call_id": ids[1], "name": "now"}
    assert weather == {"role": "tool", "content": "18 C", "tool_call_id": ids[0]}


# ---- think -----------------------------------------------------------------------------


def test_think_false_gives_the_model_an_empty_thinking_block(live_server: Start) -> None:
    seen: list[str] = []

    def reply(prompt: str) -> FakeReply:
        seen.append(prompt)
        skipped = prompt.endswith("</think>\n\n")
        return FakeReply("The answer." if skipped else "Let me think.\n</think>\n\nHm.")

    server = live_server(reply, think_template=True)
    client = client_for(server)
    chatted = client.chat(model="fake-model", messages=HI, think=False)
    assert chatted.message.content == "The answer." and chatted.message.thinking is None
    assert seen[-1].endswith("<think>\n</think>\n\n")
    generated = client.generate(model="fake-model", prompt="hi", think=False)
    assert generated.response == "The answer." and generated.thinking is None
    thought = client.chat(model="fake-model", messages=HI, think=True)
    assert thought.message.thinking == "Let me think."


@pytest.mark.slow  # 1,100 scripted tokens: ~30 s on a shared CPU
def test_think_low_bounds_the_reasoning_at_its_budget(live_server: Start) -> None:
    long = FakeReply(chunks=["<think>", *["hmm "] * 1100, "</think>", "Yes."])
    server = live_server(long, max_seq_len=8192, context_length=8192)
    client = client_for(server)
    options = {"num_predict": 1200}
    low = client.chat(model="fake-model", messages=HI, think="low", options=options)
    # reasoning_effort "low": 1024 tokens of thinking, then the forced end and the answer.
    assert low.message.thinking == ("hmm " * 1024).strip()
    assert low.message.content  # the script goes on after the forced end: the fake's answer
    medium = client.chat(model="fake-model", messages=HI, think="medium", options=options)
    assert medium.message.thinking == ("hmm " * 1100).strip()
    assert medium.message.content == "Yes."


# ---- tiny-r1 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Iterator[ollama.Client]:
    built = build_engine(make_settings(model=str(TINY_R1_HF), engine="transformers"))
    with LiveServer(built.engine) as server:  # type: ignore[arg-type]
        yield client_for(server)


def _model(client: ollama.Client) -> str:
    return client.list().models[0].model or ""


def test_tiny_r1_think_false_gives_no_thinking(tiny: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 40}
    full = tiny.chat(model=_model(tiny), messages=HI, think=True, options=options)
    assert full.message.thinking == TINY_REASONING
    skipped = tiny.chat(model=_model(tiny), messages=HI, think=False, options=options)
    assert skipped.message.thinking is None
    assert skipped.message.content == TINY_ANSWER
    # Only the answer is generated: <think>, the thinking and </think> went into the prompt.
    assert skipped.eval_count == len(TINY_REPLY_IDS) - TINY_REPLY_IDS.index(ANSWER_START)
    assert skipped.prompt_eval_count == (full.prompt_eval_count or 0) + 4  # "<think>\n</think>\n\n"


def test_tiny_r1_think_low_keeps_a_short_reasoning_whole(tiny: ollama.Client) -> None:
    # tiny-r1 thinks for 14 tokens, well inside "low"'s 1024: the reasoning is all there.
    options = {"temperature": 0, "num_predict": 64}
    reply = tiny.chat(model=_model(tiny), messages=HI, think="low", options=options)
    assert (reply.message.thinking, reply.message.content) == (TINY_REASONING, TINY_ANSWER)


def test_tiny_r1_format_applies_after_its_reasoning() -> None:
    # A template that opens <think> in the prompt (as recent R1 templates do): the reasoning
    # runs free and the schema holds from the answer on.
    model = {"model": str(TINY_R1_HF), "chat_template": R1_THINK_TEMPLATE}
    built = build_engine(make_settings(engine="transformers", **model))
    with LiveServer(built.engine, make_settings(**model)) as server:  # type: ignore[arg-type]
        client = client_for(server)
        options = {"temperature": 0, "num_predict": 64}
        reply = client.chat(model=_model(client), messages=HI, format=PERSON, options=options)
    assert reply.message.thinking == TINY_REASONING
    text = reply.message.content or ""
    if reply.done_reason == "stop":
        jsonschema.validate(json.loads(text), PERSON)
    else:  # cut at num_predict: still the start of the object
        assert reply.done_reason == "length" and text.lstrip().startswith('{"name": "')


def test_tiny_r1_on_llamacpp_answers_with_tools_offered() -> None:
    # Ollama's tools are always "auto": tiny-r1 on the llama.cpp engine sees them described in
    # the prompt and still answers as it always does, thinking apart, no call made up.
    built = build_engine(make_settings(model=str(TINY_R1_GGUF), engine="llamacpp"))
    assert built.engine.kind == "llamacpp"
    with LiveServer(built.engine) as server:  # type: ignore[arg-type]
        client = client_for(server)
        options = {"temperature": 0, "num_predict": 64}
        parts = list(
            client.chat(
                model=_model(client),
                messages=HI,
                tools=[WEATHER, CLOCK],
                think=True,
                options=options,
                stream=True,
            )
        )
        plain = client.chat(model=_model(client), messages=HI, think=True, options=options)
    assert "".join(p.message.thinking or "" for p in parts) == TINY_REASONING
    assert "".join(p.message.content or "" for p in parts) == TINY_ANSWER
    assert not any(p.message.tool_calls for p in parts)
    assert parts[-1].done and parts[-1].done_reason == "stop"
    # The tools went into the prompt (r1serve's generic tool prompt for this template).
    assert (parts[-1].prompt_eval_count or 0) > (plain.prompt_eval_count or 0) + 50
