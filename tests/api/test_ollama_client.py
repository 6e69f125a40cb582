"""The official ``ollama`` Python client, unchanged but for a key header, and Open WebUI's calls."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import ollama
import pytest

from fakehub import FakeHub
from fakehub.fixtures import fake_hub  # noqa: F401 - the fixture
from r1serve.engine.fake import FakeEngine
from r1serve.engine.registry import build_engine
from support.accounts import secure_settings
from support.api import REPLY, LiveServer, make_settings
from support.models import TINY_ANSWER, TINY_R1_HF, TINY_REASONING

Start = Callable[..., LiveServer]
HI = [{"role": "user", "content": "hi"}]
TINY_REPO = "r1serve-test/tiny-r1"


@pytest.fixture
def keyed() -> Iterator[tuple[LiveServer, str, str]]:
    """A server with logins on; an admin key and a user key."""
    with LiveServer(FakeEngine(REPLY), secure_settings()) as server:
        users, keys = server.accounts.users, server.accounts.keys
        admin = keys.create(users.by_name("admin").id).key
        user = keys.create(users.create("ada", "ada-password-1", "user").id).key
        yield server, admin, user


def client_for(server: LiveServer, key: str | None = None) -> ollama.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return ollama.Client(host=server.url, headers=headers)


def test_chat_and_generate_streaming_and_not(live_server: Start) -> None:
    client = client_for(live_server())
    whole = client.chat(model="fake-model", messages=HI)
    assert whole.message.content == "The **answer** is 42."
    assert whole.message.thinking == "Let me think."
    assert whole.done and whole.done_reason == "stop" and (whole.eval_count or 0) > 0
    parts = list(client.chat(model="fake-model:latest", messages=HI, stream=True))
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert "".join(p.message.thinking or "" for p in parts) == whole.message.thinking
    assert parts[-1].done and parts[-1].prompt_eval_count == whole.prompt_eval_count
    generated = client.generate(model="fake-model", prompt="hi", think=False)
    assert generated.response == "The **answer** is 42." and generated.thinking is None
    pieces = list(client.generate(model="fake-model", prompt="hi", stream=True))
    assert "".join(p.response or "" for p in pieces) == "The **answer** is 42."


def test_list_show_ps_version(live_server: Start) -> None:
    server = live_server()
    client = client_for(server)
    [listed] = client.list().models
    assert listed.model == "fake-model:latest"
    shown = client.show("fake-model")
    assert shown.capabilities == ["completion"]  # the fake's ChatML template does not think
    assert shown.modelinfo and shown.modelinfo["general.name"] == "fake-model"
    assert shown.template and "im_start" in shown.template
    [loaded] = client.ps().models
    assert loaded.model == "fake-model:latest" and loaded.context_length == 4096
    assert httpx.get(f"{server.url}/api/version").json()["version"]


def test_errors_raise_response_error_with_a_readable_message(live_server: Start) -> None:
    client = client_for(live_server())
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="llama3", messages=HI)
    assert missing.value.status_code == 404
    assert missing.value.error == "model 'llama3' not found: this server serves 'fake-model:latest'"
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="fake-model", messages=HI, options={"temperature": -1})
    assert bad.value.status_code == 400 and bad.value.error.startswith("options.temperature")
    with pytest.raises(ollama.ResponseError) as streamed:
        bad_schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "x"}}}
        next(iter(client.chat(model="fake-model", messages=HI, format=bad_schema, stream=True)))
    assert streamed.value.status_code == 400, streamed.value.error
    assert streamed.value.error.startswith("format: the constraint cannot be compiled")
    with pytest.raises(ollama.ResponseError) as embed:
        client.embed(model="fake-model", input="hello")
    assert "does not support embeddings" in embed.value.error


def test_think_true_on_tiny_r1_gives_its_exact_reasoning_and_answer() -> None:
    built = build_engine(make_settings(model=str(TINY_R1_HF), engine="transformers"))
    with LiveServer(built.engine) as server:  # type: ignore[arg-type]
        client = client_for(server)
        model = client.list().models[0].model or ""
        options = {"temperature": 0, "num_predict": 64}
        reply = client.chat(model=model, messages=HI, think=True, options=options)
        assert (reply.message.thinking, reply.message.content) == (TINY_REASONING, TINY_ANSWER)
        assert "thinking" in (client.show(model).capabilities or [])
        parts = list(client.generate(model=model, prompt="hi", think=True, options=options,
                                     stream=True))  # fmt: skip
        assert "".join(p.thinking or "" for p in parts) == TINY_REASONING
        assert "".join(p.response or "" for p in parts) == TINY_ANSWER


Keyed = tuple[LiveServer, str, str]


def test_with_logins_the_key_header_is_all_a_client_needs(keyed: Keyed) -> None:
    server, _, user_key = keyed
    with pytest.raises(ollama.ResponseError) as refused:
        client_for(server).list()
    assert refused.value.status_code == 401 and "API key" in refused.value.error
    reply = client_for(server, user_key).chat(model="fake-model", messages=HI)
    assert reply.message.content == "The **answer** is 42."
    with pytest.raises(ollama.ResponseError) as not_admin:
        client_for(server, user_key).pull(TINY_REPO)
    assert not_admin.value.status_code == 403


def test_pull_from_the_hub_then_list_and_delete(
    keyed: tuple[LiveServer, str, str],
    fake_hub: FakeHub,  # noqa: F811 - the fixture
) -> None:
    server, admin_key, _ = keyed
    client = client_for(server, admin_key)
    progress = list(client.pull(TINY_REPO, stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    files = [p for p in progress if p.total]
    assert files and all(0 <= (p.completed or 0) <= (p.total or 0) for p in files)
    assert any(p.completed == p.total for p in files)
    names = [m.model for m in client.list().models]
    assert f"{TINY_REPO}:latest" in names
    assert client.pull(f"{TINY_REPO}:latest").status == "success"  # present: nothing to fetch
    assert client.delete(f"{TINY_REPO}:latest").status == "success"
    assert f"{TINY_REPO}:latest" not in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete(TINY_REPO)
    assert gone.value.status_code == 404


def test_open_webui_ollama_connection_calls(keyed: tuple[LiveServer, str, str]) -> None:
    """What Open WebUI sends to an Ollama connection with a key: version, tags, ps, show, chat."""
    server, _, key = keyed
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        assert http.get("/api/version").json()["version"].count(".") == 2
        [model] = http.get("/api/tags").json()["models"]
        assert model["name"] == model["model"] == "fake-model:latest"
        assert {"size", "digest", "details", "modified_at"} <= model.keys()
        assert http.get("/api/ps").json()["models"][0]["name"] == model["name"]
        shown = http.post("/api/show", json={"model": model["name"]}).json()
        assert {"details", "model_info", "capabilities", "parameters", "template"} <= shown.keys()
        body = {
            "model": model["name"],
            "messages": [{"role": "system", "content": "You are helpful."}, *HI],
            "stream": True,
            "options": {"temperature": 0.6, "top_p": 0.95, "num_ctx": 2048},
            "keep_alive": "5m",
        }
        with http.stream("POST", "/api/chat", json=body) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == "The **answer** is 42."
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "stop"
