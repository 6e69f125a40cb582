"""The chat page on real engines, end to end: the tiny R1 model and the embedded SmolLM2.

The other browser tests script replies through the fake engine; here the page talks to the
real transformers engine, so the R1 split, the chat template and the streaming all meet in
Chromium.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from r1serve.api.app import create_app
from r1serve.engine.registry import build_engine
from support.api import make_settings
from support.browser import PAGE_TRAPS, PageGuard, serve_app
from support.models import TINY_ANSWER, TINY_R1_HF, TINY_REASONING


def served(model: str | None) -> Iterator[str]:
    settings = make_settings(model=model)
    built = build_engine(settings)
    with serve_app(create_app(settings, built.engine)) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_url() -> Iterator[str]:
    yield from served(str(TINY_R1_HF))


@pytest.fixture(scope="module")
def smollm_url() -> Iterator[str]:
    for url in served(None):  # the embedded default model
        # A real model may talk for a thousand tokens; cap its replies the way a user would,
        # in their own reply defaults, so the test's length is bounded on a busy machine.
        httpx.put(f"{url}/api/me/reply-defaults", json={"max_tokens": 48}).raise_for_status()
        yield url


REPLY_DONE = ".chat[data-state=idle] .message.assistant:last-child:not([data-state=streaming])"
STALL_S = 90  # no new text for this long means the reply is stuck, however busy the machine


def wait_for_reply(page: Page) -> None:
    """Wait until the reply ends, failing only if its text stops growing before it does."""
    reply = page.locator(".message.assistant").last
    seen, last_change = -1, time.monotonic()
    while page.locator(REPLY_DONE).count() == 0:
        size = len(reply.text_content() or "") if reply.count() else 0
        if size != seen:
            seen, last_change = size, time.monotonic()
        assert time.monotonic() - last_change < STALL_S, f"reply stalled at {seen} characters"
        page.wait_for_timeout(250)


def ask(chromium: Browser, url: str, text: str) -> tuple[str, str | None, PageGuard]:
    """Send ``text`` on a fresh page; the reply's answer text and its thinking (if shown)."""
    context = chromium.new_context(locale="en-US")
    guard = PageGuard(origin=url)
    context.route(re.compile(".*"), guard.route)
    context.add_init_script(PAGE_TRAPS)
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: guard.page_errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector(".chat[data-models=loaded][data-conversation]")
        page.fill(".composer-input", text)
        page.press(".composer-input", "Enter")
        wait_for_reply(page)
        reply = page.locator(".message.assistant").last
        expect(reply.locator(".answer")).not_to_be_empty()
        answer = reply.locator(".answer").inner_text().strip()
        thinking = reply.locator(".thinking")  # folded once the answer starts: read its text
        shown = thinking.count() > 0 and thinking.is_visible()
        reasoning = (thinking.locator(".thinking-body").text_content() or "").strip()
        return answer, reasoning if shown else None, guard
    finally:
        context.close()


def test_tiny_r1_reasoning_and_answer_are_apart_in_the_page(
    chromium: Browser, tiny_url: str
) -> None:
    answer, reasoning, guard = ask(chromium, tiny_url, "hi")
    assert answer == TINY_ANSWER
    assert reasoning == TINY_REASONING
    assert "think>" not in answer
    assert guard.offsite_requests == [] and guard.page_errors == []


def test_smollm2_answers_in_the_page(chromium: Browser, smollm_url: str) -> None:
    answer, reasoning, guard = ask(chromium, smollm_url, "What is the capital of France?")
    assert len(answer.split()) >= 2  # a real sentence from a real model
    assert reasoning is None  # SmolLM2 does not think; no empty thinking block is shown
    assert guard.offsite_requests == [] and guard.page_errors == []
