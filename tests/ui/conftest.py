"""Browser-test fixtures: one app server and one Chromium per session, a fresh page per test.

Every test that opens the page starts with no conversations and no reply running, so the
sidebar shows only what the test made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from support import history
from support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ChatPage,
    UiServer,
    new_chat_page,
    run_ui_server,
)

# The shared 2-core machine can be slow; a stuck page still fails well inside the test timeout.
expect.set_options(timeout=10_000)


@pytest.fixture(scope="session")
def ui_server() -> Iterator[UiServer]:
    with run_ui_server() as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def empty_history(ui_server: UiServer) -> None:
    """No conversations, and no reply generating, when the test starts."""
    history.wipe(ui_server)


@pytest.fixture
def open_chat(
    chromium: Browser, ui_server: UiServer, empty_history: None
) -> Iterator[Callable[..., ChatPage]]:
    """Open the chat page in a fresh context at ``path`` (other options go to ``new_context``)."""
    closers: list[Callable[[], None]] = []

    def open_page(path: str = "/", **context_options: Any) -> ChatPage:
        context_options.setdefault("locale", "en-US")
        chat, close = new_chat_page(chromium, ui_server, **context_options)
        closers.append(close)
        chat.open(path)
        return chat

    yield open_page
    for close in closers:
        close()


@pytest.fixture
def chat(open_chat: Callable[..., ChatPage]) -> Iterator[ChatPage]:
    """The chat page in English; after the test, nothing ran, left, broke the CSP or showed."""
    page = open_chat()
    yield page
    page.assert_nothing_unsafe_happened()
