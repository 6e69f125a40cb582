"""The page's layout: one header row on a phone, the settings panel with values in force and
their sources, the repetition guard, keyboard shortcuts, the axe check, and screenshots."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from r1serve.conversations.defaults import R1_REPLY_CAP
from r1serve.engine.fake import FakeReply
from support.browser import ChatPage
from support.layout import AXE, DESKTOP, PHONE, serious_violations, shoot

pytestmark = pytest.mark.browser

SHOWCASE = (
    "<think>\nThe sum of the first $n$ odd numbers is $n^2$; check $n=3$: $1+3+5=9$.\n</think>\n\n"
    "The answer is $\\boxed{9}$, since\n\n$$\\sum_{k=1}^{n} (2k-1) = n^2.$$\n\n"
    "- inline: $\\int_0^1 x^2\\,dx = \\tfrac{1}{3}$\n- code: `sum(range(1, 6, 2))`\n"
)


def boxes(page: Page, selectors: list[str]) -> dict[str, dict[str, float]]:
    """Bounding boxes of the visible elements among selectors."""
    found: dict[str, dict[str, float]] = {}
    for selector in selectors:
        locator = page.locator(selector)
        if locator.count() and locator.first.is_visible():
            box = locator.first.bounding_box()
            assert box is not None, selector
            found[selector] = box
    return found


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    )


def open_with_axe(open_chat: Callable[..., ChatPage], **options: Any) -> ChatPage:
    """The page with axe-core loaded by the test (an init script, outside the page's CSP)."""
    chat = open_chat(**options)
    chat.page.context.add_init_script(path=str(AXE))
    chat.open()
    return chat


def test_phone_header_is_one_row_and_nothing_overlaps(open_chat: Callable[..., ChatPage]) -> None:
    chat = open_chat(viewport=PHONE)
    page = chat.page
    chat.server.replies.set(FakeReply("Short answer."))
    chat.send("hi")
    chat.wait_idle()
    header = page.locator(".topbar").bounding_box()
    assert header is not None and header["height"] <= 60, header
    parts = boxes(
        page,
        [
            ".drawer-toggle",
            ".model-select",
            ".settings-toggle",
            ".export-menu > summary",
            ".user-menu > summary",
        ],
    )
    assert len(parts) == 5, parts
    for name, box in parts.items():
        bottom = header["y"] + header["height"]
        assert box["y"] >= header["y"] and box["y"] + box["height"] <= bottom, (name, box)
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (name, box)
        assert box["width"] >= 24 and box["height"] >= 24, (name, box)  # big enough to tap
    names = list(parts)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not overlap(parts[first], parts[second]), (first, second, parts)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The conversation and the composer sit below the header, inside the screen.
    below = boxes(page, [".messages", ".composer"])
    for name, box in below.items():
        assert box["y"] >= header["y"] + header["height"] - 0.5, (name, box)
        assert box["y"] + box["height"] <= PHONE["height"] + 0.5, (name, box)
    # The settings sheet opens over the bottom of the screen, inside it.
    page.locator(".settings-toggle").click()
    sheet = page.locator(".settings-panel").bounding_box()
    assert sheet is not None
    assert sheet["x"] == 0 and sheet["width"] == PHONE["width"]
    assert abs(sheet["y"] + sheet["height"] - PHONE["height"]) < 1, sheet
    page.locator(".settings-close").click()
    expect(page.locator(".settings-panel")).to_be_hidden()


def test_settings_panel_shows_values_in_force_and_their_sources(chat: ChatPage) -> None:
    page = chat.page
    page.locator(".settings-toggle").click()
    source = page.locator(".setting-source[data-field=max_tokens]")
    # fake-r1 is an R1 model: the page's reply cap for it is DeepSeek's recommended length.
    expect(source).to_have_text(f"In force: {R1_REPLY_CAP} · model default")
    expect(page.locator(".setting-max_tokens")).to_have_attribute("placeholder", str(R1_REPLY_CAP))
    temperature = page.locator(".setting-source[data-field=temperature]")
    expect(temperature).to_have_text("In force: 1 · server default")
    expect(page.locator(".setting-source[data-field=seed]")).to_have_text(
        "In force: random · server default"
    )

    # My defaults: saved on the server, then in force for the conversation.
    page.locator(".scope-user").click()
    expect(page.locator(".system-prompt")).to_be_hidden()
    page.locator(".setting-temperature").fill("0.4")
    expect(temperature).to_have_text("In force: 0.4 · your default")
    page.locator(".settings-save").click()
    expect(page.locator(".settings-status")).to_have_text("Saved as your defaults.")
    stored = httpx.get(chat.server.url + "/api/me/reply-defaults").json()
    assert stored["user"] == {"temperature": 0.4}

    page.locator(".scope-conversation").click()
    expect(page.locator(".setting-temperature")).to_have_value("")
    expect(temperature).to_have_text("In force: 0.4 · your default")
    page.locator(".setting-temperature").fill("0.2")
    expect(temperature).to_have_text("In force: 0.2 · this conversation")
    page.locator(".settings-save").click()
    chat.server.replies.set(FakeReply("ok"))
    chat.send("hello")
    chat.wait_idle()
    body = chat.requests_to("POST", "/api/conversations")[0][3]
    assert body["settings"]["temperature"] == 0.2

    # In Chinese too.
    page.locator(".user-menu > summary").click()
    page.locator("#language-select").select_option("zh-CN")
    expect(temperature).to_have_text("生效值：0.2 · 此对话")


def test_repetition_guard_toggle_follows_the_server(chat: ChatPage) -> None:
    page = chat.page
    page.locator(".settings-toggle").click()
    known = httpx.get(chat.server.url + "/api/me/reply-defaults").json()["in_force"]
    toggle = page.locator(".setting-repetition_guard")
    if "repetition_guard" not in known:
        # This server's conversations have no such setting: the page offers none to save.
        expect(toggle).to_have_count(0)
        return
    source = page.locator(".setting-source[data-field=repetition_guard]")
    expect(source).to_contain_text("In force: on")
    toggle.select_option("off")
    expect(source).to_have_text("In force: off · this conversation")
    page.locator(".settings-save").click()
    chat.server.replies.set(FakeReply("ok"))
    chat.send("hello")
    chat.wait_idle()
    body = chat.requests_to("POST", "/api/conversations")[0][3]
    assert body["settings"]["repetition_guard"] is False


def test_keyboard_shortcuts(chat: ChatPage) -> None:
    page = chat.page
    page.keyboard.press("Control+/")
    dialog = page.locator(".shortcuts-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("tr")).to_have_count(6)
    expect(dialog).to_contain_text("Copy the last answer")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    # Escape stops a streaming reply.
    chat.server.replies.set(FakeReply(chunks=[f"w{i} " for i in range(400)], delay_s=0.05))
    chat.send("long")
    expect(page.locator(".chat")).to_have_attribute("data-state", "streaming")
    # the copy below needs the start of the answer: stop only once it is on the page
    expect(page.locator(".message.assistant").last).to_contain_text("w0 w1 ")
    page.locator(".messages").click()
    page.keyboard.press("Escape")
    chat.wait_idle()
    expect(page.locator(".message.assistant .message-meta")).to_contain_text("Stopped")

    # Ctrl+Shift+C copies the last answer.
    page.evaluate(
        """() => {
            window.__copied = null;
            navigator.clipboard.writeText = async (text) => { window.__copied = text; };
        }"""
    )
    page.keyboard.press("Control+Shift+C")
    page.wait_for_function("() => window.__copied !== null")
    assert str(page.evaluate("window.__copied")).startswith("w0 w1")

    # Ctrl+K: search; Shift+Escape: back to the message box; Ctrl+Shift+O: a new chat.
    page.keyboard.press("Control+k")
    expect(page.locator(".conversation-search")).to_be_focused()
    page.keyboard.press("Shift+Escape")
    expect(page.locator(".composer-input")).to_be_focused()
    assert chat.conversation_id() != ""
    page.keyboard.press("Control+Shift+O")
    expect(page.locator(".chat")).to_have_attribute("data-conversation", "")
    expect(page.locator(".message")).to_have_count(0)

    # The help dialog, from the user menu, in Chinese.
    page.locator(".user-menu > summary").click()
    page.locator("#language-select").select_option("zh-CN")
    page.locator(".show-shortcuts").click()
    expect(dialog).to_contain_text("复制最后一条回答")
    expect(dialog.locator("h2")).to_have_text("键盘快捷键")


@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_chat_pages_pass_axe_and_are_photographed(
    open_chat: Callable[..., ChatPage], size: str, viewport: dict[str, int]
) -> None:
    chat = open_with_axe(open_chat, viewport=viewport)
    page = chat.page
    chat.server.replies.set(FakeReply(SHOWCASE))
    chat.send("What is the sum of the first n odd numbers?")
    chat.wait_idle()
    page.locator(".message.assistant .thinking > summary").click()
    expect(page.locator(".answer .katex-display")).to_have_count(1)
    problems: dict[str, list[str]] = {"chat": serious_violations(page)}
    shoot(page, f"chat-{size}")

    page.locator(".settings-toggle").click()
    expect(page.locator(".settings-save")).to_be_visible()
    problems["settings"] = serious_violations(page)
    shoot(page, f"settings-{size}")
    page.locator(".settings-close").click()

    page.locator(".user-menu > summary").click()
    expect(page.locator("#theme-select")).to_be_visible()
    problems["user menu"] = serious_violations(page)
    shoot(page, f"user-menu-{size}")
    page.locator(".show-shortcuts").click()
    problems["shortcuts"] = serious_violations(page)
    shoot(page, f"shortcuts-{size}")
    page.keyboard.press("Escape")

    for view in ("keys", "usage", "users"):
        page.locator(".user-menu > summary").click()
        link = page.locator(f".nav-link[data-view={view}]")
        if view == "users" and link.count() == 0:
            continue
        link.click()
        page.wait_for_timeout(300)
        problems[view] = serious_violations(page)
        shoot(page, f"{view}-{size}")
    assert {page: found for page, found in problems.items() if found} == {}
    chat.assert_nothing_unsafe_happened()


def test_continue_is_offered_for_a_reply_cut_at_the_cap(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(FakeReply("Done."))
    chat.send("short")
    chat.wait_idle()
    expect(page.locator(".message.assistant .continue-reply")).to_have_count(0)  # it ended

    page.locator(".settings-toggle").click()
    page.locator(".setting-max_tokens").fill("3")
    page.locator(".settings-save").click()
    expect(page.locator(".settings-status")).to_have_text("Saved.")
    chat.server.replies.set(FakeReply(chunks=[f"w{i} " for i in range(30)]))
    chat.send("long")
    chat.wait_idle()
    last = page.locator(".message.assistant").last
    expect(last.locator(".message-meta")).to_contain_text("length limit")
    button = last.locator(".continue-reply")
    expect(button).to_have_text("Continue")
    message_id = last.get_attribute("data-id")
    assert message_id
    with page.expect_request(lambda request: request.url.endswith("/continue")) as sent:
        button.click()
    assert sent.value.method == "POST"
    assert sent.value.url.endswith(f"/messages/{message_id}/continue")
