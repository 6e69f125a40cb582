"""The chat page against the real app and the fake engine, in headless Chromium."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from r1serve.engine.fake import FakeReply
from support.browser import MODEL_NAME, ChatPage, UiServer

pytestmark = pytest.mark.browser

REASONING = (
    "The user wants **structure**: a heading, a list and some code. "
    "I will write each of them in turn and keep it short."
)
MARKDOWN_REPLY = (
    f"<think>\n{REASONING}\n</think>\n\n"
    "# Streamed heading\n\n"
    "- first item\n- second item\n\n"
    "```python\ndef answer():\n    return 42\n```\n\n"
    "Done."
)
LONG_REPLY = "<think>\nShort thought.\n</think>\n\n" + " ".join(["word"] * 150)


def test_page_loads_only_from_the_server(chat: ChatPage) -> None:
    requests = chat.guard.requests
    assert all(url.startswith(chat.server.url + "/") for url in requests), requests
    assets = ("marked.esm.js", "purify.es.js", "highlight.min.js", "style.css", "history.css")
    for asset in (*assets, "app.js", "views/sidebar.js"):
        assert any(url.endswith(asset) for url in requests), asset
    assert chat.guard.console_errors == []
    expect(chat.page.locator(".model-select")).to_have_value(MODEL_NAME)


def test_page_is_served_with_a_strict_csp(ui_server: UiServer) -> None:
    response = httpx.get(ui_server.url + "/")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_markdown_and_reasoning_render_while_streaming(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply(MARKDOWN_REPLY, delay_s=0.06))
    page = chat.page
    chat.send("Show me markdown")

    thinking = page.locator(".message.assistant .thinking")
    expect(thinking).to_have_attribute("open", "")
    expect(thinking.locator("summary")).to_have_text(re.compile(r"^Thinking… \d+\.\d s$"))
    expect(thinking.locator(".thinking-body strong")).to_have_text("structure")

    # The heading is rendered while the reply is still streaming, and the thinking folds.
    heading = page.locator(".answer h1")
    expect(heading).to_have_text("Streamed heading")
    assert page.locator(".chat").get_attribute("data-state") == "streaming"
    expect(thinking).not_to_have_attribute("open", "")

    chat.wait_idle()
    expect(page.locator(".answer li")).to_have_text(["first item", "second item"])
    code = page.locator(".answer pre code.hljs.language-python")
    expect(code).to_contain_text("return 42")
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    label = thinking.locator("summary").text_content() or ""
    match = re.fullmatch(r"Thought for (\d+\.\d) s", label)
    assert match and float(match.group(1)) > 0, label
    expect(thinking).not_to_have_attribute("open", "")
    assert "structure" in (thinking.locator(".thinking-body").text_content() or "")
    expect(page.locator(".message.assistant .message-meta")).to_have_text(
        re.compile(r"\d+ prompt \+ \d+ completion tokens · [\d.]+ tok/s")
    )

    thinking.locator("summary").click()  # the user can unfold it again
    expect(thinking).to_have_attribute("open", "")
    [(_, _, headers, body)] = chat.requests_to("POST", "/messages")
    assert body == {"content": "Show me markdown"}
    assert headers["accept"] == "text/event-stream"
    [(_, _, _, created)] = chat.requests_to("POST", "/api/conversations")
    assert created["model"] == MODEL_NAME


def test_earlier_turns_reach_the_model_without_their_reasoning(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply("<think>\nsecret plan\n</think>\n\nFirst answer."))
    chat.send("one")
    chat.wait_idle()
    chat.server.replies.set(FakeReply("Second answer."))
    chat.send("two")
    chat.wait_idle()

    prompt = chat.server.replies.prompts[-1]
    assert prompt.index("one") < prompt.index("First answer.") < prompt.index("two")
    assert "secret plan" not in prompt
    expect(chat.page.locator(".message.assistant")).to_have_count(2)
    # The page names the branch it shows; the server builds the prompt from it.
    first_reply = chat.page.locator(".message.assistant").first.get_attribute("data-id")
    assert chat.requests_to("POST", "/messages")[1][3] == {
        "content": "two",
        "parent_id": first_reply,
    }


def test_stop_ends_the_generation_on_the_server(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply(LONG_REPLY, delay_s=0.1))
    aborted_before = chat.server.aborted()
    page = chat.page
    chat.send("Talk for a while")
    expect(page.locator(".answer")).to_contain_text("word")
    expect(page.locator(".composer .send")).to_be_hidden()
    page.locator(".composer .stop").click()

    expect(page.locator(".chat")).to_have_attribute("data-state", "idle")
    expect(page.locator(".composer .stop")).to_be_hidden()
    expect(page.locator(".composer .send")).to_be_visible()
    expect(page.locator(".message.assistant .message-meta")).to_have_text("Stopped.")
    assert len(chat.requests_to("POST", "/stop")) == 1
    deadline = time.monotonic() + 10
    while not chat.server.aborted() - aborted_before:
        assert time.monotonic() < deadline, "the server never aborted the request"
        time.sleep(0.05)

    # The partial answer stays in the history the next prompt is built from.
    chat.server.replies.set(FakeReply("ok"))
    chat.send("next")
    chat.wait_idle()
    assert "word" in chat.server.replies.prompts[-1].split("Talk for a while", 1)[1]


def test_enter_sends_and_shift_enter_adds_a_line(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply("<think>\nhm\n</think>\n\n" + "slow " * 20, delay_s=0.05))
    page = chat.page
    box = page.locator(".composer-input")
    box.click()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(box).to_have_value("line one\nline two")
    assert chat.requests_to("POST", "/messages") == []

    page.keyboard.press("Enter")
    expect(box).to_have_value("")
    expect(page.locator(".message.user .user-text")).to_have_text("line one\nline two")
    assert chat.requests_to("POST", "/messages")[0][3]["content"] == "line one\nline two"

    # While a reply streams, Enter neither sends nor loses what is typed.
    expect(page.locator(".chat")).to_have_attribute("data-state", "streaming")
    page.keyboard.type("again")
    page.keyboard.press("Enter")
    expect(box).to_have_value("again")
    chat.wait_idle()
    assert len(chat.requests_to("POST", "/messages")) == 1
    expect(page.locator(".composer .send")).to_be_enabled()


def test_new_chat_clears_the_conversation(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply("first"))
    chat.send("hello")
    chat.wait_idle()
    expect(chat.page.locator(".message.assistant .thinking")).to_be_hidden()  # no reasoning
    chat.page.locator(".new-chat").click()
    expect(chat.page.locator(".message")).to_have_count(0)
    expect(chat.page.locator(".empty-hint")).to_be_visible()
    chat.send("again")
    chat.wait_idle()
    assert "hello" not in chat.server.replies.prompts[-1]
    assert len(chat.requests_to("POST", "/api/conversations")) == 2  # a second conversation


def test_server_error_message_is_shown(chat: ChatPage) -> None:
    # The fake engine's context is 4096 tokens of bytes: this prompt cannot fit.
    chat.page.locator(".composer-input").fill("x" * 5000)
    chat.page.locator(".composer-input").press("Enter")
    status = chat.page.locator(".status")
    expect(status).to_have_class(re.compile(r"\berror\b"))
    expect(status).to_contain_text("Error:")
    expect(status).to_contain_text(re.compile(r"\d{4}"))  # the message gives token counts
    expect(chat.page.locator(".chat")).to_have_attribute("data-state", "idle")


def test_error_event_mid_stream_is_shown(chat: ChatPage) -> None:
    def message(role: str, message_id: str, parent: str | None) -> dict[str, object]:
        return {
            "id": message_id, "parent_id": parent, "role": role, "content": "",
            "reasoning": "", "status": "generating", "siblings": {"index": 0, "count": 1,
            "ids": [message_id]},
        }  # fmt: skip

    start = {
        "conversation_id": "c1",
        "user_message": {**message("user", "u1", None), "content": "hi", "status": "complete"},
        "assistant_message": message("assistant", "a1", "u1"),
        "dropped_turns": 0,
    }
    stream = (
        f"event: start\nid: 1\ndata: {json.dumps(start)}\n\n"
        'id: 2\ndata: {"choices":[{"index":0,"delta":{"content":"partial"}}]}\n\n'
        'event: error\nid: 3\ndata: {"error":{"message":"engine fell over","type":"server_error",'
        '"param":null,"code":null}}\n\n'
        "data: [DONE]\n\n"
    )
    chat.page.route(
        "**/api/conversations/*/messages",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=stream
        ),
    )
    chat.send("hi")
    expect(chat.page.locator(".status")).to_have_text("Error: engine fell over")
    expect(chat.page.locator(".answer")).to_have_text("partial")
    expect(chat.page.locator(".message-meta.error")).to_have_text("engine fell over")
    expect(chat.page.locator(".chat")).to_have_attribute("data-state", "idle")
    expect(chat.page.locator(".message.assistant .regenerate")).to_be_visible()


def test_language_switch_changes_the_ui_and_is_remembered(chat: ChatPage) -> None:
    page = chat.page
    chat.server.replies.set(FakeReply("<think>\nhmm\n</think>\n\nHi."))
    chat.send("hello")
    chat.wait_idle()
    expect(page.locator(".composer .send")).to_have_attribute("aria-label", "Send")

    page.locator(".user-menu > summary").click()
    page.locator("#language-select").select_option("zh-CN")
    expect(page.locator(".composer .send")).to_have_attribute("aria-label", "发送")
    expect(page.locator(".composer .send")).to_have_attribute("title", "发送")
    expect(page.locator(".new-chat")).to_have_text("新对话")
    expect(page.locator(".composer-input")).to_have_attribute("placeholder", "给模型发消息…")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator(".thinking summary")).to_have_text(re.compile(r"^已思考 \d+\.\d 秒$"))

    page.reload()
    chat.wait_ready()
    expect(page.locator(".composer .send")).to_have_attribute("aria-label", "发送")
    expect(page.locator(".thinking summary")).to_have_text(re.compile(r"^已思考 \d+\.\d 秒$"))
    expect(page.locator("#language-select")).to_have_value("zh-CN")


def test_chinese_browser_gets_chinese_ui(open_chat: Callable[..., ChatPage]) -> None:
    chat = open_chat(locale="zh-CN")
    expect(chat.page.locator(".composer .send")).to_have_attribute("aria-label", "发送")
    expect(chat.page.locator(".empty-hint")).to_contain_text("Shift+Enter")


def test_every_language_has_every_string(chat: ChatPage) -> None:
    keys = chat.page.evaluate(
        """async () => {
            const { STRINGS } = await import("/static/i18n.js");
            return Object.fromEntries(
                Object.entries(STRINGS).map(([code, strings]) => [code, Object.keys(strings)]));
        }"""
    )
    english = set(keys.pop("en"))
    assert keys, "only English is defined"
    for code, names in keys.items():
        assert set(names) == english, code


def test_readable_at_phone_width_in_dark_mode(open_chat: Callable[..., ChatPage]) -> None:
    chat = open_chat(viewport={"width": 375, "height": 700}, color_scheme="dark")
    chat.server.replies.set(
        FakeReply("A long line:\n\n```text\n" + "x" * 300 + "\n```\n\n" + "y" * 200)
    )
    chat.send("wide things")
    chat.wait_idle()
    page = chat.page
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(page.locator(".composer .send")).to_be_in_viewport()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(v) for v in re.findall(r"\d+", background)[:3])
    assert red + green + blue < 150, background
