"""The Ollama API on the wire: NDJSON framing, fields, options, errors, auth, metering, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from r1serve.api import ollama_mapping as mapping
from r1serve.api.ollama_schemas import Options
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.transformers.scheduler import SchedulerConfig
from r1serve.errors import RequestError
from support.accounts import SecureApp, secure_app
from support.api import REPLY, LiveServer, wait_for

Build = Callable[..., tuple[TestClient, FakeEngine]]
HI = [{"role": "user", "content": "hi"}]
REASONING, ANSWER = "Let me think.", "The **answer** is 42."
SLOW = FakeReply(chunks=[f"w{i} " for i in range(400)], delay_s=0.02)


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    """Every line of an NDJSON body parsed; each line must be one whole JSON object."""
    text = response.read().decode()
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert all(lines), "no blank lines between objects"
    return [json.loads(line) for line in lines]


def stream(client: TestClient, path: str, body: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    with client.stream("POST", path, json=body, **kw) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        return ndjson(response)


def test_chat_streams_ndjson_with_thinking_apart_and_stats_last(client: TestClient) -> None:
    lines = stream(client, "/api/chat", {"model": "fake-model", "messages": HI})
    *pieces, last = lines
    assert all(not p["done"] and p["model"] == "fake-model" for p in pieces)
    assert all(p["message"]["role"] == "assistant" for p in pieces)
    assert "".join(p["message"].get("thinking", "") for p in pieces) == REASONING
    assert "".join(p["message"]["content"] for p in pieces) == ANSWER
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["message"] == {"role": "assistant", "content": ""}
    assert last["prompt_eval_count"] > 0 and last["eval_count"] > 0
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[name], int) and last[name] >= 0
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"]
    assert last["created_at"].endswith("Z")


def test_chat_and_generate_without_streaming_answer_one_object(client: TestClient) -> None:
    chat = client.post("/api/chat", json={"model": "fake-model", "messages": HI, "stream": False})
    assert chat.status_code == 200 and chat.headers["content-type"] == "application/json"
    body = chat.json()
    assert body["message"] == {"role": "assistant", "content": ANSWER, "thinking": REASONING}
    assert body["done"] is True and body["done_reason"] == "stop" and body["eval_count"] > 0
    gen = client.post("/api/generate", json={"model": "fake-model:latest", "prompt": "hi",
                                             "stream": False}).json()  # fmt: skip
    assert (gen["response"], gen["thinking"], gen["done"]) == (ANSWER, REASONING, True)


def test_generate_streams_response_and_thinking(client: TestClient) -> None:
    *pieces, last = stream(client, "/api/generate", {"model": "fake-model", "prompt": "hi"})
    assert "".join(p["response"] for p in pieces) == ANSWER
    assert "".join(p.get("thinking", "") for p in pieces) == REASONING
    assert last["done"] and last["response"] == "" and last["eval_count"] > 0


@pytest.mark.parametrize("think", [True, "low", "medium", "high"])
def test_think_true_and_levels_send_the_reasoning(client: TestClient, think: object) -> None:
    body = {"model": "fake-model", "messages": HI, "stream": False, "think": think}
    assert client.post("/api/chat", json=body).json()["message"]["thinking"] == REASONING


def test_think_false_keeps_the_reasoning_out(client: TestClient) -> None:
    body = {"model": "fake-model", "messages": HI, "think": False}
    lines = stream(client, "/api/chat", body)
    assert all("thinking" not in line["message"] for line in lines)
    assert "".join(line["message"]["content"] for line in lines) == ANSWER
    whole = client.post("/api/generate", json={"model": "fake-model", "prompt": "x",
                                               "think": False, "stream": False}).json()  # fmt: skip
    assert whole["response"] == ANSWER and "thinking" not in whole


def test_system_and_raw_reach_the_prompt(make_client: Build) -> None:
    client, _ = make_client(lambda prompt: FakeReply(text=prompt))
    body = {"model": "fake-model", "prompt": "hello", "system": "be brief", "stream": False}
    text = client.post("/api/generate", json=body).json()["response"]
    assert "be brief" in text and "hello" in text and "<|im_start|>" in text
    raw = client.post("/api/generate", json={"model": "fake-model", "prompt": "plain words",
                                             "raw": True, "stream": False})  # fmt: skip
    assert raw.json()["response"] == "plain words"


def test_empty_requests_load_and_unload_without_generating(make_client: Build) -> None:
    client, engine = make_client()
    loaded = client.post("/api/generate", json={"model": "fake-model"}).json()
    assert (loaded["done"], loaded["done_reason"], loaded["response"]) == (True, "load", "")
    body = {"model": "fake-model", "messages": [], "keep_alive": 0}
    assert client.post("/api/chat", json=body).json()["done_reason"] == "unload"
    assert engine.finished == {}


def test_num_predict_caps_the_reply_and_stop_ends_it(client: TestClient) -> None:
    body = {"model": "fake-model", "messages": HI, "stream": False}
    capped = client.post("/api/chat", json={**body, "options": {"num_predict": 3}}).json()
    assert capped["eval_count"] == 3 and capped["done_reason"] == "length"
    stopped = client.post("/api/chat", json={**body, "options": {"stop": ["answer"]}}).json()
    assert stopped["message"]["content"] == "The **" and stopped["done_reason"] == "stop"


def test_num_ctx_bounds_the_context_and_never_exceeds_the_server(make_client: Build) -> None:
    client, _ = make_client(FakeReply(text="word " * 50, eos=False), context_length=64)
    body = {"model": "fake-model", "messages": HI, "stream": False}
    small = client.post("/api/chat", json={**body, "options": {"num_ctx": 30}}).json()
    assert small["prompt_eval_count"] + small["eval_count"] == 30
    huge = client.post("/api/chat", json={**body, "options": {"num_ctx": 1_000_000}}).json()
    assert huge["prompt_eval_count"] + huge["eval_count"] == 64
    tiny = client.post("/api/chat", json={**body, "options": {"num_ctx": 2}})
    assert tiny.status_code == 400 and "context" in tiny.json()["error"]


def test_options_map_onto_sampling_params(make_client: Build) -> None:
    _, engine = make_client()
    from r1serve.api.service import CompletionService

    service = CompletionService(engine)
    options = Options.model_validate(
        {"temperature": 0.3, "top_k": 5, "top_p": 0.9, "min_p": 0.1, "seed": 7, "stop": ["x"],
         "repeat_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": -0.5,
         "num_predict": 9, "num_gpu": 99, "num_thread": 4, "mirostat": 0, "repeat_last_n": 64}
    )  # fmt: skip
    params = mapping.sampling(service, options)
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.3, 5, 0.9, 0.1)
    assert (params.seed, params.stop, params.max_tokens) == (7, ("x",), 9)
    assert (params.repetition_penalty, params.presence_penalty) == (1.2, 0.5)
    assert params.frequency_penalty == -0.5
    unlimited = mapping.sampling(service, Options.model_validate({"num_predict": -1}))
    assert unlimited.max_tokens is None
    with pytest.raises(RequestError, match="mirostat"):
        mapping.sampling(service, Options.model_validate({"mirostat": 2}))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"format": "yaml"}, 'format is "json" or a JSON schema'),
        ({"format": {"type": "nope"}}, "format: the constraint cannot be compiled"),
        ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools"),
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "text-only"),
        ({"options": {"typical_p": 0.5}}, "typical_p"),
        ({"options": {"temperature": "hot"}}, "temperature"),
        ({"think": "max"}, "think"),
        ({"messages": "hi"}, "messages"),
        ({"model": "other"}, "not found"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_unsupported_and_bad_fields_answer_ollama_errors(
    client: TestClient, body: dict[str, Any], words: str
) -> None:
    response = client.post("/api/chat", json={"model": "fake-model", "messages": HI, **body})
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert isinstance(error, str) and words in error, error
    assert response.json().keys() == {"error"}


def test_generate_refuses_images_and_template_overrides(client: TestClient) -> None:
    for extra, words in (({"images": ["aGk="]}, "text-only"), ({"template": "{{x}}"}, "template")):
        body = {"model": "fake-model", "prompt": "x", **extra}
        response = client.post("/api/generate", json=body)
        assert response.status_code == 400 and words in response.json()["error"]


def test_embed_is_a_clear_error(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "fake-model", "input": "x"})
    assert response.status_code == 400
    assert response.json() == {"error": "model 'fake-model' does not support embeddings"}


def test_overload_is_a_503_with_retry_after(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(SLOW, max_slots=2, scheduler_config=SchedulerConfig(max_waiting=2))
    body = {"model": "fake-model", "messages": HI, "options": {"num_predict": 20}}

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            calls = [http.post("/api/chat", json={**body, "stream": False}) for _ in range(8)]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(main())
    assert sorted(r.status_code for r in responses) == [200] * 4 + [503] * 4
    for refused in (r for r in responses if r.status_code == 503):
        assert int(refused.headers["Retry-After"]) >= 1
        assert "busy" in refused.json()["error"]


def test_stream_disconnect_aborts_the_generation(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(SLOW)
    with (
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream("POST", "/api/chat", json={"model": "fake-model", "messages": HI}) as resp,
    ):
        seen = [line for _, line in zip(range(4), resp.iter_lines(), strict=False)]
        assert all(json.loads(line)["done"] is False for line in seen)
    assert wait_for(lambda: list(server.engine.finished.values()) == ["abort"])
    assert len(server.engine.fake_runner.decode_batches) < 100


# ---- with logins on ----------------------------------------------------------------------


@pytest.fixture
def secure() -> Iterator[SecureApp]:
    with secure_app(REPLY) as app:
        app.add_user("ada")
        yield app


def test_keys_are_required_and_errors_keep_ollama_shape(secure: SecureApp) -> None:
    client = secure.client
    for method, path in (("GET", "/api/tags"), ("POST", "/api/chat"), ("GET", "/api/version")):
        response = client.request(method, path, json={})
        assert response.status_code == 401
        assert isinstance(response.json()["error"], str)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # r1serve's own /api/ routes keep the OpenAI-style error object
    assert client.get("/api/usage").json()["error"]["type"] == "authentication_error"
    headers = {"Authorization": f"Bearer {secure.key_for('ada')}"}
    assert client.get("/api/tags", headers=headers).status_code == 200


def test_usage_is_recorded_per_ollama_endpoint(secure: SecureApp) -> None:
    key = secure.key_for("ada")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "fake-model", "messages": HI, "stream": False}
    whole = secure.client.post("/api/chat", json=body, headers=headers).json()
    stream(secure.client, "/api/generate", {"model": "fake-model", "prompt": "hi"},
           headers=headers)  # fmt: skip
    secure.accounts.usage.flush()
    usage = secure.client.get("/api/usage", headers={"X-API-Key": key}).json()
    recent = list(reversed(usage["recent"]))
    assert [r["endpoint"] for r in recent] == ["/api/chat", "/api/generate"]
    assert recent[0]["prompt_tokens"] == whole["prompt_eval_count"]
    assert recent[0]["completion_tokens"] == whole["eval_count"]


def test_pull_and_delete_are_for_admins(secure: SecureApp) -> None:
    headers = {"Authorization": f"Bearer {secure.key_for('ada')}"}
    pulled = secure.client.post("/api/pull", json={"model": "org/x"}, headers=headers)
    assert pulled.status_code == 403 and isinstance(pulled.json()["error"], str)
    deleted = secure.client.request(
        "DELETE", "/api/delete", json={"model": "org/x"}, headers=headers
    )
    assert deleted.status_code == 403


def test_delete_refuses_the_served_model_and_unknown_names(client: TestClient) -> None:
    served = client.request("DELETE", "/api/delete", json={"model": "fake-model:latest"})
    assert served.status_code == 409 and "being served" in served.json()["error"]
    unknown = client.request("DELETE", "/api/delete", json={"model": "org/nothing"})
    assert unknown.status_code == 404 and "not found" in unknown.json()["error"]


def test_pull_names_a_hub_repo(client: TestClient) -> None:
    response = client.post("/api/pull", json={"model": "deepseek-r1:1.5b"})
    assert response.status_code == 400 and "ORG/NAME" in response.json()["error"]
