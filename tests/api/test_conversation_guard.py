"""Stored replies: the repetition guard is on by default, reasoning settings apply (fake engine)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from r1serve.engine.fake import FakeEngine, FakeReply
from support.api import REPLY, make_settings
from support.conversations import create, events_of, final_message, joined_text, post

Make = Callable[..., tuple[TestClient, FakeEngine]]
LOOP = FakeReply(chunks=["Let me check. ", "Is it 4? ", "Yes, 4. "], eos=False, repeat=True)


def test_guard_ends_a_looping_reply_by_default(make_client: Make) -> None:
    client, _ = make_client(LOOP, settings=make_settings())
    conversation = create(client, settings={"max_tokens": 500})
    message = final_message(post(client, conversation["id"], "hi"))
    assert message["finish_reason"] == "repetition"
    assert message["status"] == "complete"
    assert message["completion_tokens"] < 500


def test_guard_can_be_turned_off_per_conversation(make_client: Make) -> None:
    client, _ = make_client(LOOP, settings=make_settings())
    settings = {"max_tokens": 300, "repetition_guard": False}
    conversation = create(client, settings=settings)
    message = final_message(post(client, conversation["id"], "hi"))
    assert message["finish_reason"] == "length"


def test_reasoning_budget_per_conversation(make_client: Make) -> None:
    reply = FakeReply(chunks=["<think>", *["hmm "] * 30, "</think>", "Yes."])
    client, _ = make_client(reply, settings=make_settings())
    conversation = create(client, settings={"max_reasoning_tokens": 2})
    reasoning, content = joined_text(post(client, conversation["id"], "hi"))
    assert reasoning == "hmm hmm"
    assert content


def test_effort_none_per_conversation(make_client: Make) -> None:
    def reply(prompt: str) -> FakeReply:
        return FakeReply("Direct." if prompt.endswith("</think>\n\n") else REPLY)

    client, _ = make_client(reply, settings=make_settings(), think_template=True)
    conversation = create(client, settings={"reasoning_effort": "none"})
    reasoning, content = joined_text(post(client, conversation["id"], "hi"))
    assert (reasoning, content) == ("", "Direct.")


def test_continue_a_reply_cut_at_the_limit(make_client: Make) -> None:
    prompts: list[str] = []

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        if prompt.endswith("One two"):
            return FakeReply(" three.")
        return FakeReply("<think>\nCount.\n</think>\n\nOne two three four five six")

    client, _ = make_client(reply, settings=make_settings())
    conversation = create(client, settings={"max_tokens": 6})
    cut = final_message(post(client, conversation["id"], "count"))
    assert cut["finish_reason"] == "length" and cut["content"] == "One two"
    path = f"/api/conversations/{conversation['id']}/messages/{cut['id']}/continue"
    response = client.post(path)
    assert response.status_code == 200, response.text
    done = final_message(events_of(response.text))
    assert done["id"] == cut["id"]
    assert (done["reasoning"], done["content"]) == ("Count.", "One two three.")
    assert done["finish_reason"] == "stop"
    assert prompts[-1].endswith("<think>\nCount.\n</think>\n\nOne two")
    again = client.post(path)  # a finished reply cannot be continued
    assert again.status_code == 400
