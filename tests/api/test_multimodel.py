"""Several models in one server: every API routes by ``model``, with the default for none."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest
from fastapi.testclient import TestClient

from r1serve.api.app import create_app
from r1serve.auth import close_accounts
from r1serve.engine.fake import FakeEngine
from r1serve.engine.models import ServedModel, ServedModels
from support.accounts import BASE_URL, secure_settings
from support.accounts import test_accounts as open_accounts
from support.api import HI, LiveServer, make_settings, sse_payloads

ALPHA = "Alpha says hi."
BETA_ANSWER = "Beta answers."
BETA = f"<think>\nBeta thinks.\n</think>\n\n{BETA_ANSWER}"


def two_models() -> ServedModels:
    """alpha (the default, 4096 tokens) and beta (an R1-style reply, 2048 tokens)."""
    alpha = FakeEngine(ALPHA, model_name="alpha")
    beta = FakeEngine(BETA, model_name="beta", context_length=2048)
    return ServedModels([ServedModel("alpha", alpha), ServedModel("beta", beta)])


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer(two_models()) as live:  # type: ignore[arg-type]
        yield live


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = make_settings()
    accounts = open_accounts(settings)
    try:
        with TestClient(create_app(settings, two_models(), accounts)) as test_client:
            yield test_client
    finally:
        close_accounts(accounts)


def openai_client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_openai_client_lists_both_models_and_routes_by_model(server: LiveServer) -> None:
    client = openai_client(server)
    cards = {card.id: card.model_extra for card in client.models.list()}
    assert list(cards) == ["alpha", "beta"]
    extras = {name: (extra or {}) for name, extra in cards.items()}
    assert extras["alpha"]["max_model_len"] == 4096 and extras["beta"]["max_model_len"] == 2048
    assert extras["alpha"]["engine"] == extras["beta"]["engine"] == "fake"

    beta = client.chat.completions.create(model="beta", messages=HI)  # type: ignore[arg-type]
    assert beta.model == "beta" and beta.choices[0].message.content == BETA_ANSWER
    extra = beta.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == "Beta thinks."
    alpha = client.chat.completions.create(model="alpha", messages=HI)  # type: ignore[arg-type]
    assert alpha.model == "alpha" and alpha.choices[0].message.content == ALPHA

    stream = client.chat.completions.create(model="beta", messages=HI, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert {chunk.model for chunk in chunks} == {"beta"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == BETA_ANSWER
    text = client.completions.create(model="alpha", prompt="x", max_tokens=20)
    assert text.model == "alpha" and text.choices[0].text == ALPHA
    assert client.models.retrieve("beta").id == "beta"


def test_unknown_model_is_a_404_naming_the_served_ones(server: LiveServer) -> None:
    client = openai_client(server)
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="gamma", messages=HI)  # type: ignore[arg-type]
    message = str(error.value)
    assert "'gamma'" in message and "'alpha'" in message and "'beta'" in message
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gamma")
    assert "'alpha', 'beta'" in str(missing.value)


def test_an_omitted_model_is_the_default_one(client: TestClient) -> None:
    chat = client.post("/v1/chat/completions", json={"messages": HI})
    assert chat.status_code == 200 and chat.json()["model"] == "alpha"
    assert chat.json()["choices"][0]["message"]["content"] == ALPHA


def test_the_script_endpoints_route_by_model(client: TestClient) -> None:
    generated = client.post("/generate", json={"prompt": "hi", "model": "beta"})
    assert generated.status_code == 200, generated.text
    assert generated.json()["response"] == BETA_ANSWER
    assert client.post("/generate", json={"prompt": "hi"}).json()["response"] == ALPHA
    streamed = client.get("/stream-generate", params={"prompt": "hi", "model": "beta"})
    assert streamed.status_code == 200
    text = "".join(p for p in sse_payloads(streamed.text) if p != "[DONE]")
    assert text == "Beta thinks." + BETA_ANSWER  # reasoning events, then the answer
    unknown = client.post("/generate", json={"prompt": "hi", "model": "gamma"})
    assert unknown.status_code == 404 and "'alpha', 'beta'" in unknown.text


def _reply_text(client: TestClient, conversation_id: str, content: str) -> str:
    response = client.post(
        f"/api/conversations/{conversation_id}/messages", json={"content": content}
    )
    assert response.status_code == 200, response.text
    detail = client.get(f"/api/conversations/{conversation_id}").json()
    return str(detail["messages"][-1]["content"])


def test_a_conversation_remembers_its_model(client: TestClient) -> None:
    created = client.post("/api/conversations", json={"model": "beta"})
    assert created.status_code in (200, 201), created.text
    conversation = created.json()
    assert conversation["model"] == "beta"
    assert _reply_text(client, conversation["id"], "first") == BETA_ANSWER
    assert client.get(f"/api/conversations/{conversation['id']}").json()["model"] == "beta"

    switched = client.patch(f"/api/conversations/{conversation['id']}", json={"model": "alpha"})
    assert switched.status_code == 200 and switched.json()["model"] == "alpha"
    assert _reply_text(client, conversation["id"], "second") == ALPHA

    default = client.post("/api/conversations", json={}).json()
    assert default["model"] == "alpha"
    unknown = client.post("/api/conversations", json={"model": "gamma"})
    assert unknown.status_code == 404 and "'alpha', 'beta'" in unknown.text
    defaults = client.get("/api/me/reply-defaults", params={"model": "beta"})
    assert defaults.status_code == 200 and defaults.json()["model"] == "beta"


def test_ollama_api_lists_and_routes_by_model(server: LiveServer) -> None:
    client = ollama.Client(host=server.url)
    names = [entry.model for entry in client.list().models]
    assert names[:2] == ["alpha:latest", "beta:latest"]
    running = [entry.model for entry in client.ps().models]
    assert running == ["alpha:latest", "beta:latest"]
    beta = client.chat(model="beta:latest", messages=HI, think=True)
    assert beta.message.content == BETA_ANSWER and beta.message.thinking == "Beta thinks."
    assert client.generate(model="alpha", prompt="hi").response == ALPHA
    shown = client.show("beta")
    assert shown.modelinfo is not None and shown.modelinfo["r1serve.engine"] == "fake"
    assert any(v == 2048 for k, v in shown.modelinfo.items() if k.endswith("context_length"))
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="gamma", messages=HI)
    assert missing.value.error == (
        "model 'gamma' not found: this server serves 'alpha:latest', 'beta:latest'"
    )


def test_engine_gauges_are_labelled_by_model(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'r1serve_max_running{model="alpha"}' in text
    assert 'r1serve_max_running{model="beta"}' in text
    client.post("/v1/chat/completions", json={"messages": HI, "model": "beta"})
    after = client.get("/metrics").text
    assert 'r1serve_requests_finished_total{finish_reason="stop",model="beta"} 1.0' in after
    assert 'finish_reason="stop",model="alpha"' not in after


def test_a_key_scoped_to_one_model_is_refused_the_other() -> None:
    settings = secure_settings()
    accounts = open_accounts(settings)
    try:
        app = create_app(settings, two_models(), accounts)
        with TestClient(app, base_url=BASE_URL) as http:
            user = accounts.users.create("ada", "ada-password", "user")
            key = accounts.keys.create(user.id, models=["alpha"]).key
            headers = {"Authorization": f"Bearer {key}"}

            def post(path: str, body: dict[str, object]) -> httpx.Response:
                return http.post(path, json=body, headers=headers)

            assert (
                post("/v1/chat/completions", {"model": "alpha", "messages": HI}).status_code == 200
            )
            refused = post("/v1/chat/completions", {"model": "beta", "messages": HI})
            assert refused.status_code == 403 and "may not use model" in refused.text
            assert post("/generate", {"prompt": "hi", "model": "beta"}).status_code == 403
            assert post("/api/chat", {"model": "beta", "messages": HI}).status_code == 403
            assert post("/api/conversations", {"model": "beta"}).status_code == 403
            mine = post("/api/conversations", {"model": "alpha"})
            assert mine.status_code in (200, 201), mine.text
            # An omitted model is the default one, which this key may use.
            assert post("/v1/chat/completions", {"messages": HI}).status_code == 200
    finally:
        close_accounts(accounts)
