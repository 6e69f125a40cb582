"""The conversation sidebar: new, open, search, rename, delete, date groups, more on scroll."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, expect

from r1serve.engine.fake import FakeReply
from support import history
from support.browser import ChatPage, UiServer

pytestmark = pytest.mark.browser


def item_of(chat: ChatPage, conversation_id: str) -> Locator:
    return chat.page.locator(f".conversation-item[data-id='{conversation_id}']")


def test_first_message_makes_a_conversation_and_new_chat_starts_another(chat: ChatPage) -> None:
    page = chat.page
    expect(page.locator(".conversation-empty")).to_have_text("No conversations yet.")
    chat.server.replies.set(FakeReply("Paris."))
    chat.send("What is the capital of France?\nAnswer briefly.")
    chat.wait_idle()

    first = chat.conversation_id()
    assert first and page.url.endswith(f"#/c/{first}")
    item = item_of(chat, first)
    expect(item.locator(".conversation-title")).to_have_text("What is the capital of France?")
    expect(item).to_have_class(re.compile(r"\bcurrent\b"))
    expect(page.locator(".conversation-heading")).to_have_text("What is the capital of France?")
    today = page.locator(".conversation-group[data-group=today] .conversation-group-title")
    expect(today).to_have_text("Today")
    assert len(chat.requests_to("POST", "/api/conversations")) == 1
    [(_, path, _, body)] = chat.requests_to("POST", "/messages")
    assert path == f"/api/conversations/{first}/messages"
    assert body == {"content": "What is the capital of France?\nAnswer briefly."}
    stored = history.get(chat.server, first)
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"].strip() == "Paris."

    page.locator(".new-chat").click()
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator(".chat")).to_have_attribute("data-conversation", "")
    assert not page.url.endswith(first)
    chat.server.replies.set(FakeReply("Blue."))
    chat.send("Sky colour?")
    chat.wait_idle()
    second = chat.conversation_id()
    assert second and second != first
    titles = page.locator(".conversation-item .conversation-title")
    expect(titles).to_have_text(["Sky colour?", "What is the capital of France?"])

    item.locator(".conversation-open").click()
    expect(page.locator(".chat")).to_have_attribute("data-conversation", first)
    expect(page.locator(".message.user .user-text")).to_have_text(
        ["What is the capital of France?\nAnswer briefly."]
    )
    expect(page.locator(".message.assistant .answer")).to_have_text("Paris.")
    expect(item).to_have_attribute("aria-current", "page")
    # The second reply went under the second conversation, not the first.
    assert len(history.get(chat.server, first)["messages"]) == 2


def test_search_matches_titles_and_message_text(
    ui_server: UiServer, open_chat: Callable[..., ChatPage]
) -> None:
    history.create(ui_server, title="Gardening notes")
    misc = history.create(ui_server, title="Misc")
    ui_server.replies.set(FakeReply("They doze standing up."))
    history.send(ui_server, misc["id"], "How do zebras sleep?")
    history.create(ui_server, title="Recipes")
    chat = open_chat()
    page = chat.page
    titles = page.locator(".conversation-item .conversation-title")
    expect(titles).to_have_count(3)

    search = page.locator(".conversation-search")
    search.fill("GARDEN")
    expect(titles).to_have_text(["Gardening notes"])
    search.fill("zebras")
    expect(titles).to_have_text(["Misc"])
    search.fill("nothing like this anywhere")
    expect(page.locator(".conversation-empty")).to_have_text("No conversation matches.")
    search.fill("")
    expect(titles).to_have_count(3)
    chat.assert_nothing_unsafe_happened()


def test_rename_and_delete_in_place(
    ui_server: UiServer, open_chat: Callable[..., ChatPage]
) -> None:
    old = history.create(ui_server, title="Old name")
    kept = history.create(ui_server, title="Keep me")
    chat = open_chat()
    page = chat.page
    item = item_of(chat, old["id"])

    item.locator(".item-menu > summary").click()  # the item's actions sit in its "…" menu
    item.locator(".rename-conversation").click()
    box = item.locator(".rename-input")
    expect(box).to_be_focused()
    expect(box).to_have_value("Old name")
    box.fill("New name")
    box.press("Enter")
    expect(item.locator(".conversation-title")).to_have_text("New name")
    assert history.get(ui_server, old["id"])["title"] == "New name"

    item.locator(".item-menu > summary").click()  # the item's actions sit in its "…" menu
    item.locator(".rename-conversation").click()
    item.locator(".rename-input").fill("Not this")
    item.locator(".rename-input").press("Escape")
    expect(item.locator(".conversation-title")).to_have_text("New name")
    assert history.get(ui_server, old["id"])["title"] == "New name"

    # Deleting asks once more in the button itself; the first click deletes nothing.
    item.locator(".item-menu > summary").click()
    delete = item.locator(".delete-conversation")
    delete.click()
    expect(delete).to_have_text("Really delete?")
    assert history.get(ui_server, old["id"])["id"] == old["id"]
    delete.click()
    expect(item).to_have_count(0)
    assert [c["id"] for c in history.list_all(ui_server)] == [kept["id"]]

    # Deleting the open conversation leaves a new chat.
    item_of(chat, kept["id"]).locator(".conversation-open").click()
    expect(page.locator(".chat")).to_have_attribute("data-conversation", kept["id"])
    item_of(chat, kept["id"]).locator(".item-menu > summary").click()
    item_of(chat, kept["id"]).locator(".delete-conversation").click()
    item_of(chat, kept["id"]).locator(".delete-conversation").click()
    expect(page.locator(".chat")).to_have_attribute("data-conversation", "")
    expect(page.locator(".conversation-empty")).to_have_text("No conversations yet.")
    chat.assert_nothing_unsafe_happened()  # and no confirm() dialog was ever opened


def test_more_conversations_load_on_scroll(
    ui_server: UiServer, open_chat: Callable[..., ChatPage]
) -> None:
    for number in range(35):
        history.create(ui_server, title=f"Topic {number:02d}")
    chat = open_chat()
    items = chat.page.locator(".conversation-item")
    expect(items).to_have_count(30)
    items.last.scroll_into_view_if_needed()
    expect(items).to_have_count(35)
    titles = chat.page.locator(".conversation-title").all_text_contents()
    assert titles == [f"Topic {number:02d}" for number in reversed(range(35))]


def test_conversations_are_grouped_by_date(chat: ChatPage) -> None:
    groups = chat.page.evaluate(
        """async () => {
            const { dateGroup } = await import("/static/views/sidebar.js");
            const now = new Date(2026, 2, 10, 9, 30);
            return [
                new Date(2026, 2, 10, 0, 5), new Date(2026, 2, 9, 23, 59),
                new Date(2026, 2, 9, 0, 0), new Date(2026, 2, 3, 0, 1),
                new Date(2026, 2, 2, 23, 59), new Date(2025, 11, 31),
            ].map((date) => dateGroup(date.toISOString(), now));
        }"""
    )
    assert groups == ["today", "yesterday", "yesterday", "week", "older", "older"]


def test_sidebar_speaks_chinese(ui_server: UiServer, open_chat: Callable[..., ChatPage]) -> None:
    history.create(ui_server, title="今天的对话")
    chat = open_chat(locale="zh-CN")
    page = chat.page
    expect(page.locator(".conversation-group-title")).to_have_text("今天")
    expect(page.locator(".conversation-search")).to_have_attribute("placeholder", "搜索对话")
    expect(page.locator(".settings-toggle")).to_have_attribute("aria-label", "设置")
    expect(page.locator(".item-menu > summary")).to_have_attribute("aria-label", "更多操作")
    page.locator(".item-menu > summary").click()
    expect(page.locator(".rename-conversation")).to_have_text("重命名")
