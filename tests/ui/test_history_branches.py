"""Regenerate, edit-and-resend, the ‹ n/m › arrows between versions, and copy buttons."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from r1serve.engine.fake import FakeReply
from support import history
from support.browser import ChatPage

pytestmark = pytest.mark.browser


def test_regenerate_keeps_both_replies_and_arrows_switch(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(FakeReply("First reply."))
    chat.send("Question one")
    chat.wait_idle()
    assistant = page.locator(".message.assistant")
    expect(assistant.locator(".branch-nav")).to_have_count(0)  # one version: no arrows

    chat.server.replies.set(FakeReply("Second reply."))
    assistant.locator(".regenerate").click()
    chat.wait_idle()
    expect(assistant).to_have_count(1)
    expect(assistant.locator(".answer")).to_have_text("Second reply.")
    expect(assistant.locator(".branch-position")).to_have_text("2/2")
    expect(assistant.locator(".branch-next")).to_be_disabled()
    expect(page.locator(".message.user .branch-nav")).to_have_count(0)

    assistant.locator(".branch-prev").click()
    expect(assistant.locator(".answer")).to_have_text("First reply.")
    expect(assistant.locator(".branch-position")).to_have_text("1/2")
    expect(assistant.locator(".branch-prev")).to_be_disabled()
    assert chat.requests_to("PATCH", f"/api/conversations/{chat.conversation_id()}")

    # The choice is the conversation's: a reload shows the same version.
    page.reload()
    chat.wait_ready()
    expect(assistant.locator(".answer")).to_have_text("First reply.")
    assistant.locator(".branch-next").click()
    expect(assistant.locator(".answer")).to_have_text("Second reply.")
    expect(assistant.locator(".branch-position")).to_have_text("2/2")


def test_edit_and_resend_keeps_the_old_branch(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(FakeReply("About cats."))
    chat.send("Tell me about cats")
    chat.wait_idle()
    user = page.locator(".message.user")

    # Escape leaves the message as it was.
    user.locator(".edit-message").click()
    expect(user.locator(".edit-input")).to_have_value("Tell me about cats")
    user.locator(".edit-input").press("Escape")
    expect(user.locator(".user-text")).to_have_text("Tell me about cats")

    chat.server.replies.set(FakeReply("Dogs then."))
    user.locator(".edit-message").click()
    user.locator(".edit-input").fill("Tell me about dogs")
    user.locator(".edit-send").click()
    chat.wait_idle()
    expect(user.locator(".user-text")).to_have_text("Tell me about dogs")
    expect(user.locator(".branch-position")).to_have_text("2/2")
    expect(page.locator(".message.assistant .answer")).to_have_text("Dogs then.")
    [(_, _, _, body)] = chat.requests_to("POST", "/edit")
    assert body == {"content": "Tell me about dogs"}

    user.locator(".branch-prev").click()
    expect(user.locator(".user-text")).to_have_text("Tell me about cats")
    expect(page.locator(".message.assistant .answer")).to_have_text("About cats.")

    # A follow-up continues the branch on screen.
    chat.server.replies.set(FakeReply("Cats purr."))
    cats_reply = page.locator(".message.assistant").get_attribute("data-id")
    chat.send("And more?")
    chat.wait_idle()
    body = chat.requests_to("POST", "/messages")[-1][3]
    assert body == {"content": "And more?", "parent_id": cats_reply}
    stored = history.get(chat.server, chat.conversation_id())
    assert [m["content"].strip() for m in stored["messages"]] == [
        "Tell me about cats",
        "About cats.",
        "And more?",
        "Cats purr.",
    ]


def test_copy_buttons_copy_messages_and_code(open_chat: Callable[..., ChatPage]) -> None:
    chat = open_chat(permissions=["clipboard-read", "clipboard-write"])
    page = chat.page
    reply = "Here:\n\n```python\nprint('hi')\n```\n\nDone."
    chat.server.replies.set(FakeReply(reply))
    chat.send("code please")
    chat.wait_idle()

    def clipboard() -> str:
        return str(page.evaluate("navigator.clipboard.readText()"))

    copy = page.locator(".message.assistant .copy-message")
    # An icon button: its label (for screen readers and the tooltip) says it, and a tick shows.
    expect(copy).to_have_attribute("aria-label", "Copy")
    copy.click()
    expect(copy).to_have_attribute("aria-label", "Copied")
    expect(copy).to_have_class(re.compile(r"\bcopied\b"))
    assert clipboard().strip() == reply
    expect(copy).to_have_attribute("aria-label", "Copy")  # and back

    page.locator(".copy-code").click()
    assert clipboard().strip() == "print('hi')"
    page.locator(".message.user .copy-message").click()
    assert clipboard() == "code please"
    chat.assert_nothing_unsafe_happened()
