"""Replies outlive the page: switching chats or reloading mid-reply, then coming back.

A reply that never ends by itself (the fake engine repeats it) is stopped by the test; the
text shown must then be exactly what the server stored, neither lost nor doubled by the
reattach.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from r1serve.engine.fake import FakeReply
from support import history
from support.browser import ChatPage

pytestmark = pytest.mark.browser

COUNTING = " ".join(f"n{i}" for i in range(12))
ENDLESS = FakeReply(
    f"<think>\nI will count.\n</think>\n\n{COUNTING} ", delay_s=0.03, repeat=True, eos=False
)
FINITE_TEXT = " ".join(f"w{i}" for i in range(30))
FINITE = FakeReply(FINITE_TEXT, delay_s=0.03)


def answer_text(chat: ChatPage) -> str:
    return chat.page.locator(".message.assistant .answer").last.text_content() or ""


def stop_and_compare(chat: ChatPage, conversation_id: str) -> None:
    """Stop the reply, then the shown answer must be what the server stored."""
    page = chat.page
    page.locator(".composer .stop").click()
    chat.wait_idle()
    expect(page.locator(".message.assistant .message-meta").last).to_contain_text("Stopped.")
    assert chat.requests_to("POST", "/stop"), "Stop did not call the stop route"
    stored = history.wait_until_idle(chat.server, conversation_id)
    reply = stored["messages"][-1]
    assert reply["status"] == "stopped"
    assert answer_text(chat).split() == reply["content"].split()
    assert "I will count." in reply["reasoning"]


def test_switching_chats_mid_reply_and_back_resumes_where_it_was(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(FakeReply("Quick answer."))
    chat.server.replies.when("count for me", ENDLESS)
    chat.send("count for me")
    expect(page.locator(".answer")).to_contain_text("n3")
    counting = chat.conversation_id()

    # Away: the reply goes on on the server while another conversation is used.
    page.locator(".new-chat").click()
    item = page.locator(f".conversation-item[data-id='{counting}']")
    expect(item).to_have_class(re.compile(r"\bgenerating\b"))
    chat.send("something else")
    chat.wait_idle()
    expect(page.locator(".answer")).to_have_text("Quick answer.")
    assert history.get(chat.server, counting)["active_reply"] is not None

    # Back: the reply shows where it is and keeps streaming.
    item.locator(".conversation-open").click()
    expect(page.locator(".chat")).to_have_attribute("data-conversation", counting)
    expect(page.locator(".chat")).to_have_attribute("data-state", "streaming")
    expect(page.locator(".message.user .user-text")).to_have_text(["count for me"])
    expect(page.locator(".message.assistant")).to_have_count(1)
    shown = len(answer_text(chat))
    page.wait_for_function(
        "n => document.querySelector('.message.assistant .answer').textContent.length > n",
        arg=shown,
    )
    reattached = chat.requests_to("GET", "/stream")
    assert reattached, "the page did not reattach to the running reply"
    # It had read part of the reply before leaving: it asks only for what came after.
    assert "last-event-id" in reattached[-1][2], reattached[-1][2]
    stop_and_compare(chat, counting)


def test_reply_that_finished_while_away_shows_when_back(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(FINITE)
    chat.send("say thirty words")
    expect(page.locator(".answer")).to_contain_text("w2")
    conversation = chat.conversation_id()
    page.locator(".new-chat").click()
    expect(page.locator(".message")).to_have_count(0)
    stored = history.wait_until_idle(chat.server, conversation)
    assert stored["messages"][-1]["status"] == "complete"

    page.locator(f".conversation-item[data-id='{conversation}'] .conversation-open").click()
    expect(page.locator(".message.assistant .answer")).to_have_text(FINITE_TEXT)
    expect(page.locator(".message.assistant")).to_have_attribute("data-state", "done")
    expect(page.locator(".chat")).to_have_attribute("data-state", "idle")
    expect(page.locator(f".conversation-item[data-id='{conversation}']")).not_to_have_class(
        re.compile(r"\bgenerating\b")
    )


def test_reload_mid_reply_reattaches(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(ENDLESS)
    chat.send("keep counting")
    expect(page.locator(".answer")).to_contain_text("n5")
    conversation = chat.conversation_id()

    page.reload()
    chat.wait_ready()
    expect(page.locator(".chat")).to_have_attribute("data-conversation", conversation)
    expect(page.locator(".chat")).to_have_attribute("data-state", "streaming")
    expect(page.locator(".message.user .user-text")).to_have_text(["keep counting"])
    # A fresh page replays the reply from its start, reasoning included, then goes on live.
    expect(page.locator(".message.assistant .thinking-body")).to_have_text("I will count.")
    expect(page.locator(".answer")).to_contain_text("n11")
    stop_and_compare(chat, conversation)


def test_stop_before_the_reply_is_named_still_stops_it(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(ENDLESS)
    chat.send("count and stop")
    page.locator(".composer .stop").click()  # at once, maybe before the start event
    chat.wait_idle()
    stored = history.wait_until_idle(chat.server, chat.conversation_id())
    assert stored["messages"][-1]["status"] == "stopped"
