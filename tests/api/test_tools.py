"""Tool calls on /v1/chat/completions over the scripted fake engine, with the openai client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.text.tokenizer import read_tokenizer_dir
from r1serve.engine.text.tool_format import ToolFormat, write_calls
from support.api import LiveServer, chat, sse_payloads
from support.models import TINY_R1_HF

Start = Callable[..., LiveServer]
Build = Callable[..., tuple[TestClient, FakeEngine]]
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
ASK = [{"role": "user", "content": "Weather in Paris?"}]
PARIS = {"city": 'Paris, "Île" ✓', "unit": "C"}
THINK = "<think>\nThe user wants weather.\n</think>\n\n"


def r1_template() -> str:
    template = read_tokenizer_dir(TINY_R1_HF).chat_template
    assert template is not None
    return template


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


def client_for(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def scripted_call(form: ToolFormat, calls: list[tuple[str, dict[str, Any]]], lead: str = "") -> str:
    text = write_calls(form, [(name, json.dumps(args, ensure_ascii=False)) for name, args in calls])
    return lead + text


@pytest.mark.parametrize("template", TEMPLATE_FORMS)
def test_streamed_calls_with_the_openai_client(live_server: Start, template: str) -> None:
    source, form = TEMPLATE_FORMS[template]
    calls = [("get_weather", PARIS), ("now", {})]
    if form == "llama3":
        calls = calls[:1]  # Llama 3's form: the whole answer is the call
    reply = FakeReply(chunks=awkward(THINK + scripted_call(form, calls)))
    server = live_server(reply, chat_template=source())
    stream = client_for(server).chat.completions.create(
        model="fake-model",
        messages=ASK,
        tools=[WEATHER, CLOCK],
        stream=True,  # type: ignore[list-item]
    )
    reasoning, content, finish = [], [], None
    parts: dict[int, dict[str, Any]] = {}
    pieces_per_call: dict[int, int] = {}
    for chunk in stream:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning.append(extra.get("reasoning_content") or "")
            content.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or []:
                part = parts.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                if call.id is not None:
                    assert part["id"] is None, "id and name come once, first"
                    part["id"], part["name"] = call.id, call.function.name  # type: ignore[union-attr]
                    assert call.type == "function"
                part["arguments"] += call.function.arguments or ""  # type: ignore[union-attr]
                pieces_per_call[call.index] = pieces_per_call.get(call.index, 0) + 1
            finish = choice.finish_reason or finish
    assert "".join(reasoning) == "The user wants weather."
    assert "".join(content) == ""
    assert finish == "tool_calls"
    assert [(p["name"], json.loads(p["arguments"])) for p in parts.values()] == calls
    assert all(p["id"].startswith("call_") for p in parts.values())
    assert len({p["id"] for p in parts.values()}) == len(parts)
    assert pieces_per_call[0] > 2  # the arguments arrived in pieces


@pytest.mark.parametrize("template", TEMPLATE_FORMS)
def test_whole_response_with_the_openai_client(live_server: Start, template: str) -> None:
    source, form = TEMPLATE_FORMS[template]
    lead = "" if form == "llama3" else "Let me look that up."
    reply = FakeReply(chunks=awkward(scripted_call(form, [("get_weather", PARIS)], lead)))
    server = live_server(reply, chat_template=source())
    result = client_for(server).chat.completions.create(
        model="fake-model",
        messages=ASK,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert (choice.message.content or "") == lead
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == PARIS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "answer",
    [
        '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": "not an object"}\n</tool_call>',
    ],
    ids=["unknown function", "not JSON", "not an object"],
)
def test_broken_calls_come_back_as_content(make_client: Build, answer: str) -> None:
    client, _ = make_client(FakeReply(chunks=awkward(answer)))
    body = chat(client, ASK, tools=[WEATHER])
    choice = body["choices"][0]
    assert choice["message"]["content"] == answer
    assert choice["message"]["tool_calls"] is None
    assert choice["finish_reason"] == "stop"
    payloads = sse_payloads(
        client.post(
            "/v1/chat/completions", json={"messages": ASK, "tools": [WEATHER], "stream": True}
        ).text
    )
    chunks = [json.loads(p) for p in payloads[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == answer
    assert not any("tool_calls" in d for d in deltas)


def test_plain_answers_with_tools_offered_are_content(make_client: Build) -> None:
    client, _ = make_client("<think>\nNo tool needed.\n</think>\n\nHello <there>, a < b.")
    body = chat(client, ASK, tools=[WEATHER])
    assert body["choices"][0]["message"]["content"] == "Hello <there>, a < b."
    assert body["choices"][0]["finish_reason"] == "stop"


def test_tools_reach_the_prompt_and_history_is_rendered(make_client: Build) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply("It is 18 C and sunny.")

    client, _ = make_client(reply)
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    body = chat(client, history, tools=[WEATHER])
    assert body["choices"][0]["message"]["content"] == "It is 18 C and sunny."
    prompt = prompts[-1]
    assert '"name": "get_weather", "description": "Current weather in a city"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in prompt


def test_tool_choice_none_hides_tools_and_parses_nothing(make_client: Build) -> None:
    prompts: list[str] = []
    call = scripted_call("hermes", [("get_weather", PARIS)])

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply(call)

    client, engine = make_client(reply)
    body = chat(client, ASK, tools=[WEATHER], tool_choice="none")
    assert "get_weather" not in prompts[-1]
    assert body["choices"][0]["message"]["content"] == call
    assert engine.constraints_seen == []


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        ("required", ["get_weather", "now"]),
        ({"type": "function", "function": {"name": "now"}}, ["now"]),
    ],
)
def test_required_and_named_choices_constrain_decoding(
    make_client: Build, choice: object, names: list[str]
) -> None:
    client, engine = make_client(scripted_call("hermes", [(names[0], {"city": "x"})]))
    body = chat(client, ASK, tools=[WEATHER, CLOCK], tool_choice=choice)
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    (constraint,) = engine.constraints_seen
    assert constraint.kind == "lark" and constraint.after is None
    for name in ["get_weather", "now"]:
        assert (f'"const": "{name}"' in constraint.source) == (name in names)


def test_reasoning_runs_free_before_a_required_call(make_client: Build) -> None:
    client, engine = make_client(
        THINK.removeprefix("<think>\n") + scripted_call("hermes", [("now", {})]),
        think_template=True,  # the prompt opens <think>
    )
    body = chat(client, ASK, tools=[CLOCK], tool_choice="required")
    assert body["choices"][0]["message"]["reasoning_content"] == "The user wants weather."
    assert engine.constraints_seen[0].after == "</think>"


def test_parallel_tool_calls_false_keeps_the_first_call(make_client: Build) -> None:
    calls = [("get_weather", PARIS), ("now", {})]
    client, _ = make_client(FakeReply(chunks=awkward(scripted_call("hermes", calls))))
    body = chat(client, ASK, tools=[WEATHER, CLOCK], parallel_tool_calls=False)
    assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == [
        "get_weather"
    ]


def test_legacy_functions_map_onto_tools(make_client: Build) -> None:
    client, engine = make_client(scripted_call("hermes", [("now", {})]))
    body = chat(client, ASK, functions=[CLOCK["function"]], function_call={"name": "now"})
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "now"
    assert engine.constraints_seen[0].kind == "lark"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tool_choice": "required"}, "needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "not one of tools",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "pattern"),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "cannot be combined",
        ),
    ],
)
def test_bad_tool_requests_are_400(
    client: TestClient, fields: dict[str, Any], message: str
) -> None:
    response = client.post("/v1/chat/completions", json={"messages": ASK, **fields})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_n_choices_each_get_their_calls(make_client: Build) -> None:
    client, _ = make_client(scripted_call("hermes", [("now", {})]))
    body = chat(client, ASK, tools=[CLOCK], n=2)
    assert [c["finish_reason"] for c in body["choices"]] == ["tool_calls", "tool_calls"]
    ids = [c["message"]["tool_calls"][0]["id"] for c in body["choices"]]
    assert len(set(ids)) == 2


def test_langchain_agent_loop(live_server: Start) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"18 C and sunny in {city}"

    def reply(prompt: str) -> FakeReply:
        if "<tool_response>" in prompt:
            return FakeReply("It is 18 C and sunny in Paris.")
        return FakeReply(
            chunks=awkward(scripted_call("hermes", [("get_weather", {"city": "Paris"})]))
        )

    server = live_server(reply)
    model = ChatOpenAI(
        base_url=f"{server.url}/v1",
        api_key="unused",
        model="fake-model",
        max_retries=0,  # type: ignore[arg-type]
    ).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What's the weather in Paris?")]
    for _ in range(3):
        answer = model.invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:  # type: ignore[attr-defined]
            break
        for call in answer.tool_calls:  # type: ignore[attr-defined]
            assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
            messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    assert messages[-1].content == "It is 18 C and sunny in Paris."
    assert len(messages) == 4  # question, call, result, answer
