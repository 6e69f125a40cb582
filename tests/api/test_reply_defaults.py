"""Per-user reply defaults: stored, used by replies under a conversation's own settings, and
reported with the value in force of each setting and its source."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from r1serve.conversations.defaults import OTHER_REPLY_CAP, R1_REPLY_CAP, page_reply_cap
from r1serve.engine.fake import FakeEngine, FakeReply
from support.api import make_settings
from support.conversations import create, final_message, post

Build = Callable[..., tuple[TestClient, FakeEngine]]
RAMBLING = FakeReply(chunks=[f"w{i} " for i in range(60)])


@pytest.fixture
def build(make_client: Build, database_url: str) -> Callable[..., TestClient]:
    def start(**engine_kwargs: object) -> TestClient:
        settings = make_settings(database_url=database_url)
        return make_client(RAMBLING, settings=settings, **engine_kwargs)[0]

    return start


@pytest.mark.parametrize(
    ("name", "cap"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", R1_REPLY_CAP),
        ("fake-r1", R1_REPLY_CAP),
        ("SmolLM2-135M-Instruct", OTHER_REPLY_CAP),
        ("r1serve-tiny", OTHER_REPLY_CAP),
    ],
)
def test_the_page_reply_cap_is_long_for_r1_distills(name: str, cap: int) -> None:
    assert page_reply_cap(name) == cap


def test_defaults_report_values_in_force_and_their_sources(
    build: Callable[..., TestClient],
) -> None:
    client = build(model_name="fake-r1")
    body = client.get("/api/me/reply-defaults").json()
    assert body["model"] == "fake-r1" and body["user"] == {}
    assert body["model_defaults"]["max_tokens"] == R1_REPLY_CAP
    assert body["in_force"]["max_tokens"] == {"value": R1_REPLY_CAP, "source": "model"}
    assert body["in_force"]["top_k"] == {"value": 0, "source": "server"}
    assert body["in_force"]["seed"] == {"value": None, "source": "server"}

    put = client.put("/api/me/reply-defaults", json={"max_tokens": 3, "temperature": 0.5})
    assert put.status_code == 200, put.text
    assert put.json()["user"] == {"max_tokens": 3, "temperature": 0.5}
    again = client.get("/api/me/reply-defaults").json()
    assert again["in_force"]["max_tokens"] == {"value": 3, "source": "user"}
    assert again["in_force"]["temperature"] == {"value": 0.5, "source": "user"}
    # Checked like a conversation's settings.
    bad = client.put("/api/me/reply-defaults", json={"max_tokens": "3"})
    assert bad.status_code == 400, bad.text


def test_replies_use_user_defaults_under_the_conversations_own(
    build: Callable[..., TestClient],
) -> None:
    client = build()
    assert client.put("/api/me/reply-defaults", json={"max_tokens": 3}).status_code == 200
    plain = create(client)["id"]
    done = final_message(post(client, plain, "go"))
    assert (done["finish_reason"], done["completion_tokens"]) == ("length", 3)
    own = create(client, settings={"max_tokens": 5})["id"]
    done = final_message(post(client, own, "go"))
    assert (done["finish_reason"], done["completion_tokens"]) == ("length", 5)
    # Cleared defaults: the reply runs to its end.
    assert client.put("/api/me/reply-defaults", json={}).status_code == 200
    done = final_message(post(client, plain, "again"))
    assert done["finish_reason"] == "stop" and done["completion_tokens"] > 5


def test_models_name_their_engine(build: Callable[..., TestClient]) -> None:
    client = build()
    card = client.get("/v1/models").json()["data"][0]
    assert card["engine"] == "fake"  # the fake names itself, though it runs the real scheduler
