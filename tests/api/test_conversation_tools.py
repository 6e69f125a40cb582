"""Tool calls in stored conversations: scripted calls through the real parser, the reply stored
with its calls, tool results appended, the next prompt rendered by the template, export/import."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.text.tokenizer import read_tokenizer_dir
from r1serve.engine.text.tool_format import ToolFormat, write_calls
from support.api import make_settings
from support.conversations import (
    Event,
    check_wire,
    create,
    detail,
    events_of,
    final_message,
    post,
    send,
)
from support.models import TINY_R1_HF

Build = Callable[..., tuple[TestClient, FakeEngine]]
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


def r1_template() -> str:
    template = read_tokenizer_dir(TINY_R1_HF).chat_template
    assert template is not None
    return template


def awkward(text: str, sizes: tuple[int, ...] = (1, 4, 2, 7, 3)) -> list[bytes]:
    """``text`` cut into byte chunks of cycling sizes (through multi-byte characters too)."""
    data, pieces, at, i = text.encode(), [], 0, 0
    while at < len(data):
        pieces.append(data[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return pieces


TEMPLATES: dict[str, tuple[Callable[[], str | None], ToolFormat]] = {
    "generic": (lambda: None, "hermes"),
    "r1": (r1_template, "deepseek"),
}


@pytest.fixture
def build(make_client: Build, database_url: str) -> Build:
    """A client over a fake engine whose app uses this test's database."""

    def start(replies: Any, **engine_kwargs: Any) -> tuple[TestClient, FakeEngine]:
        return make_client(replies, make_settings(database_url=database_url), **engine_kwargs)

    return start


def scripted(form: ToolFormat, calls: list[tuple[str, dict[str, Any]]], lead: str = "") -> str:
    return lead + write_calls(form, [(n, json.dumps(a, ensure_ascii=False)) for n, a in calls])


def finish_chunk(events: list[Event]) -> dict[str, Any]:
    """The chunk with the finish reason (the one before done/error)."""
    choice: dict[str, Any] = events[-3].json()["choices"][0]
    assert choice["finish_reason"] is not None
    return choice


def results_path(cid: str, mid: str) -> str:
    return f"/api/conversations/{cid}/messages/{mid}/tool-results"


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_tool_loop_is_stored_and_rendered(build: Build, template: str) -> None:
    source, form = TEMPLATES[template]
    prompts: list[str] = []
    calls_made = [("get_weather", PARIS), ("now", {})]
    replies = iter(
        [
            FakeReply(chunks=awkward(THINK + scripted(form, calls_made))),
            FakeReply("It is 18 C in Paris at noon."),
        ]
    )

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return next(replies)

    client, _ = build(reply, chat_template=source())
    cid = create(client, settings={"tools": [WEATHER, CLOCK], "temperature": 0.5})["id"]
    events = post(client, cid, "Weather in Paris?")
    check_wire(events)
    assert "get_weather" in prompts[0] and "Current weather in a city" in prompts[0]
    ending = finish_chunk(events)
    assert ending["finish_reason"] == "tool_calls"
    calls = ending["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == (
        calls_made
    )
    done = final_message(events)
    assert (done["status"], done["finish_reason"], done["content"]) == (
        "complete",
        "tool_calls",
        "",
    )
    assert done["reasoning"] == "The user wants weather."
    assert done["tool_calls"] == [{k: v for k, v in c.items() if k != "index"} for c in calls]
    assert detail(client, cid)["messages"][1] == done
    # A reattach from the database carries the same calls.
    replay = send_get(client, f"/api/conversations/{cid}/messages/{done['id']}/stream")
    assert finish_chunk(replay) == ending

    ids = [c["id"] for c in calls]
    answered = send(
        client,
        results_path(cid, done["id"]),
        {
            "results": [
                {"tool_call_id": ids[0], "content": "18 C, sunny <b>"},
                {"tool_call_id": ids[1], "content": "12:00"},
            ]
        },
    )
    check_wire(answered)
    final = final_message(answered)
    assert (final["content"], final["finish_reason"], final["tool_calls"]) == (
        "It is 18 C in Paris at noon.",
        "stop",
        None,
    )
    prompt = prompts[-1]
    asked = prompt.index("Weather in Paris?")
    assert asked < prompt.index("get_weather", asked) < prompt.index("18 C")
    assert prompt.index("18 C, sunny <b>") < prompt.index("12:00")
    assert "The user wants weather." not in prompt  # reasoning is not fed back
    if form == "hermes":
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris, ' in prompt
        assert "<tool_response>\n18 C, sunny <b>\n</tool_response>" in prompt
    else:
        assert "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather" in prompt
        assert "<｜tool▁output▁begin｜>18 C, sunny <b><｜tool▁output▁end｜>" in prompt
    branch = detail(client, cid)["messages"]
    assert [m["role"] for m in branch] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m["tool_call_id"] for m in branch[2:4]] == ids
    assert branch[2]["parent_id"] == done["id"] and branch[4]["parent_id"] == branch[3]["id"]
    assert answered[0].json()["user_message"] == branch[3]

    # Regenerating the answer keeps the calls and results in its prompt.
    regenerated = send(client, f"/api/conversations/{cid}/messages/{final['id']}/regenerate")
    assert final_message(regenerated)["parent_id"] == branch[3]["id"]
    assert "12:00" in prompts[-1] and "get_weather" in prompts[-1]


def send_get(client: TestClient, path: str) -> list[Event]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return events_of(response.text)


def test_tool_results_must_answer_each_call(build: Build) -> None:
    call = scripted("hermes", [("get_weather", PARIS)])
    client, _ = build([call, "plain answer", "ok"])
    cid = create(client, settings={"tools": [WEATHER]})["id"]
    called = final_message(post(client, cid, "Weather?"))
    call_id = called["tool_calls"][0]["id"]
    plain = final_message(post(client, cid, "and now?"))  # a reply that called nothing
    bad = [
        (called["id"], {"results": [{"tool_call_id": "call_other", "content": "x"}]}, 400),
        (called["id"], {"results": [{"tool_call_id": call_id, "content": "x"}] * 2}, 400),
        (called["id"], {"results": []}, 400),
        (called["id"], {"results": [{"tool_call_id": call_id}]}, 400),
        (plain["id"], {"results": [{"tool_call_id": call_id, "content": "x"}]}, 400),
        (plain["parent_id"], {"results": [{"tool_call_id": call_id, "content": "x"}]}, 400),
        ("f" * 24, {"results": [{"tool_call_id": call_id, "content": "x"}]}, 404),
    ]
    for mid, body, status in bad:
        response = client.post(results_path(cid, mid), json=body)
        assert response.status_code == status, (mid, body, response.text)
    assert len(detail(client, cid)["messages"]) == 4  # nothing was stored
    good = {"results": [{"tool_call_id": call_id, "content": "18 C"}]}
    assert final_message(send(client, results_path(cid, called["id"]), good))["content"] == "ok"


@pytest.mark.parametrize(
    "settings",
    [
        {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "now"}}},
        {"tool_choice": "required"},
        {"tool_choice": "sometimes"},
        {"tools": "get_weather"},
    ],
)
def test_bad_tools_in_settings_are_400(build: Build, settings: dict[str, Any]) -> None:
    client, _ = build("x")
    response = client.post("/api/conversations", json={"settings": settings})
    assert response.status_code == 400, response.text
    cid = create(client)["id"]
    patched = client.patch(f"/api/conversations/{cid}", json={"settings": settings})
    assert patched.status_code == 400, patched.text


def test_tool_choice_required_constrains_and_none_hides(build: Build) -> None:
    prompts: list[str] = []
    call = scripted("hermes", [("now", {})])

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply(call)

    client, engine = build(reply)
    cid = create(client, settings={"tools": [WEATHER, CLOCK], "tool_choice": "required"})["id"]
    assert final_message(post(client, cid, "time?"))["finish_reason"] == "tool_calls"
    (constraint,) = engine.constraints_seen
    assert constraint.kind == "lark" and '"const": "now"' in constraint.source
    # tool_choice none: no tools in the prompt, the call text stays content.
    patch = {"settings": {"tools": [WEATHER, CLOCK], "tool_choice": "none"}}
    assert client.patch(f"/api/conversations/{cid}", json=patch).status_code == 200
    done = final_message(post(client, cid, "time again?", parent_id=None))
    assert "get_weather" not in prompts[-1]
    assert (done["content"], done["tool_calls"], done["finish_reason"]) == (call, None, "stop")


def test_export_and_import_keep_calls_and_results(build: Build) -> None:
    client, _ = build([scripted("hermes", [("get_weather", PARIS)], "Let me look."), "Sunny."])
    cid = create(client, settings={"tools": [WEATHER], "tool_choice": "auto"})["id"]
    called = final_message(post(client, cid, "Weather?"))
    call_id = called["tool_calls"][0]["id"]
    body = {"results": [{"tool_call_id": call_id, "content": '{"temp": 18}'}]}
    send(client, results_path(cid, called["id"]), body)
    exported = client.get(f"/api/conversations/{cid}/export")
    assert exported.status_code == 200
    data = exported.json()
    [conversation] = data["conversations"]
    assert conversation["settings"]["tools"] == [WEATHER]
    roles = [
        (m["role"], m["tool_call_id"], bool(m["tool_calls"])) for m in conversation["messages"]
    ]
    assert roles == [
        ("user", None, False),
        ("assistant", None, True),
        ("tool", call_id, False),
        ("assistant", None, False),
    ]
    imported = client.post("/api/conversations/import", content=exported.content)
    assert imported.status_code == 200, imported.text
    [new_id] = imported.json()["imported"]
    again = detail(client, new_id)
    original = detail(client, cid)

    def shape(conversation: dict[str, Any]) -> list[Any]:
        return [
            (m["role"], m["content"], m["tool_calls"], m["tool_call_id"], m["finish_reason"])
            for m in conversation["messages"]
        ]

    assert shape(again) == shape(original)
    assert again["settings"] == original["settings"]
    assert again["messages"][1]["content"] == "Let me look."
    markdown = client.get(f"/api/conversations/{cid}/export?format=markdown").text
    assert f"## Tool result ({call_id})" in markdown and "`get_weather`" in markdown
    # A broken tool message in a file is refused with what is wrong.
    bad = json.loads(exported.content)
    bad["conversations"][0]["messages"][2]["tool_call_id"] = None
    refused = client.post("/api/conversations/import", content=json.dumps(bad))
    assert refused.status_code == 400 and "tool_call_id" in refused.json()["error"]["message"]
