"""response_format on /v1/chat/completions: constraints reach the engine, bad schemas are 400s,
and a compilation that hangs is cut off without stalling anything else."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine
from support.api import chat

Build = Callable[..., tuple[TestClient, FakeEngine]]
ASK = [{"role": "user", "content": "A person, as JSON."}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}


def test_json_schema_reaches_the_engine(make_client: Build) -> None:
    client, engine = make_client('{"name": "Ada", "age": 36}')
    body = chat(client, ASK, response_format=schema_format(PERSON))
    assert json.loads(body["choices"][0]["message"]["content"]) == {"name": "Ada", "age": 36}
    (constraint,) = engine.constraints_seen
    assert constraint.kind == "json_schema" and json.loads(constraint.source) == PERSON
    assert constraint.after is None


def test_json_object_and_text(make_client: Build) -> None:
    client, engine = make_client("{}")
    chat(client, ASK, response_format={"type": "json_object"})
    chat(client, ASK, response_format={"type": "text"})
    assert [c.kind for c in engine.constraints_seen] == ["json_object"]


def test_r1_reasoning_runs_free_before_the_json(make_client: Build) -> None:
    client, engine = make_client("Thinking.\n</think>\n\n{}", think_template=True)
    body = chat(client, ASK, response_format={"type": "json_object"})
    assert body["choices"][0]["message"]["reasoning_content"] == "Thinking."
    assert engine.constraints_seen[0].after == "</think>"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "strin"}, "strin"),
        ({"properties": {"a": {"$ref": "#/nowhere"}}}, "nowhere"),
        ({"type": "string", "pattern": "a(b"}, "regex"),
    ],
    ids=["bad type", "dangling ref", "bad pattern"],
)
def test_schemas_that_cannot_compile_are_400_before_generation(
    make_client: Build, schema: dict[str, Any], message: str
) -> None:
    client, engine = make_client("never sent")
    for stream in (False, True):
        response = client.post(
            "/v1/chat/completions",
            json={"messages": ASK, "response_format": schema_format(schema), "stream": stream},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "response_format"
        assert "cannot be compiled" in error["message"] and message in error["message"]
    assert engine.finished == {}  # nothing ran


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "yaml"},
    ],
)
def test_malformed_response_formats_are_400(
    client: TestClient, response_format: dict[str, Any]
) -> None:
    response = client.post(
        "/v1/chat/completions", json={"messages": ASK, "response_format": response_format}
    )
    assert response.status_code == 400, response.text


def test_a_hanging_compilation_is_cut_off_and_stalls_nothing(make_client: Build) -> None:
    client, engine = make_client("plain reply", constraint_timeout_s=0.5)
    assert engine.constraints is not None
    release = threading.Event()
    entered = threading.Event()
    compile_ = engine.constraints._compile

    def hanging(constraint: Any) -> Any:  # a pathological schema, as far as anyone can tell
        entered.set()
        release.wait(30)
        return compile_(constraint)

    engine.constraints._compile = hanging  # type: ignore[method-assign]
    try:
        response = client.post(
            "/v1/chat/completions", json={"messages": ASK, "response_format": schema_format(PERSON)}
        )
        assert entered.is_set()
        assert response.status_code == 400
        assert "took longer than 0.5 s to compile" in response.json()["error"]["message"]
        # The compilation is still stuck in its worker; the server serves others meanwhile.
        assert not release.is_set()
        assert chat(client, ASK)["choices"][0]["message"]["content"] == "plain reply"
    finally:
        release.set()
