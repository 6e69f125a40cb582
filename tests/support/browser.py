"""Test support for the browser tests: the app under uvicorn, Chromium, and page guards.

The app runs on the fake engine in a background thread for the whole session; each test
scripts the next reply through ``ScriptedReplies`` (by a marker in the prompt where replies
run side by side) and gets a fresh browser context whose
``PageGuard`` records every request, dialog, console error and CSP violation, and refuses any
request to another origin.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, Request, Route

from r1serve.api.app import create_app
from r1serve.auth import AuthService, close_accounts
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.settings import Settings
from support.accounts import test_accounts
from support.api import make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODEL_NAME = "fake-r1"

# Runs before any page script; see the comment at its top.
PAGE_TRAPS = (Path(__file__).parent / "page_traps.js").read_text(encoding="utf-8")


class ScriptedReplies:
    """The fake engine's reply source: the reply last given to ``set``, unless the newest user
    turn of the prompt contains a marker given to ``when``. Every prompt asked about is kept."""

    def __init__(self) -> None:
        self._reply = FakeReply("Hello!")
        self._by_marker: dict[str, FakeReply] = {}
        self._lock = threading.Lock()
        self.prompts: list[str] = []

    def set(self, reply: FakeReply) -> None:
        with self._lock:
            self._reply = reply
            self._by_marker.clear()

    def when(self, marker: str, reply: FakeReply) -> None:
        """Reply with ``reply`` to prompts whose last user turn contains ``marker``."""
        with self._lock:
            self._by_marker[marker] = reply

    def __call__(self, prompt: str) -> FakeReply:
        last_turn = prompt.rsplit("<|im_start|>user", 1)[-1]
        with self._lock:
            self.prompts.append(prompt)
            for marker, reply in self._by_marker.items():
                if marker in last_turn:
                    return reply
            return self._reply


@dataclass
class UiServer:
    """The running app: its URL, its fake engine, the reply script, the account services."""

    url: str
    engine: FakeEngine
    replies: ScriptedReplies
    accounts: AuthService

    def aborted(self) -> set[str]:
        """Engine request ids that finished because they were cancelled."""
        return {rid for rid, reason in dict(self.engine.finished).items() if reason == "abort"}


@contextmanager
def run_ui_server(settings: Settings | None = None) -> Iterator[UiServer]:
    """The real app on a FakeEngine under uvicorn, on a free port, in a background thread.

    Default settings: local mode (no login) on a fresh database; pass others for login tests.
    """
    replies = ScriptedReplies()
    engine = FakeEngine(replies, model_name=MODEL_NAME)
    settings = settings or make_settings()
    accounts = test_accounts(settings)
    try:
        with serve_app(create_app(settings, engine, accounts)) as url:
            yield UiServer(url, engine, replies, accounts)
    finally:
        close_accounts(accounts)


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """An ASGI app under uvicorn on a free port, in a background thread; yields its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class PageGuard:
    """What a page did that a test may want to assert on."""

    origin: str
    requests: list[str] = field(default_factory=list)
    offsite_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url == self.origin or url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.offsite_requests.append(url)
            route.abort()

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


@dataclass
class ChatPage:
    """The chat page in one browser context, with helpers for the common steps."""

    page: Page
    guard: PageGuard
    server: UiServer
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    # Every request to the conversation API: (method, path, headers, JSON body or None).
    history_requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)

    def open(self, path: str = "/") -> None:
        self.page.goto(self.server.url + path)
        self.wait_ready()

    def wait_ready(self) -> None:
        """The models are listed and a conversation (or a new chat) is shown."""
        self.page.wait_for_selector(".chat[data-models=loaded][data-conversation]")

    def conversation_id(self) -> str:
        """The id of the conversation shown ("" for a new chat not sent yet)."""
        return self.page.locator(".chat").get_attribute("data-conversation") or ""

    def requests_to(self, method: str, suffix: str) -> list[tuple[str, str, dict[str, str], Any]]:
        """Recorded conversation-API requests with this method whose path ends with suffix."""
        return [r for r in self.history_requests if r[0] == method and r[1].endswith(suffix)]

    def send(self, text: str) -> None:
        self.page.fill(".composer-input", text)
        self.page.press(".composer-input", "Enter")

    def wait_idle(self, timeout_ms: float = 20_000) -> None:
        self.page.wait_for_selector(
            ".chat[data-state=idle] .message.assistant:last-child:not([data-state=streaming])",
            timeout=timeout_ms,
        )

    def pwned(self) -> Any:
        return self.page.evaluate("window.__pwned")

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__cspViolations"))

    def unsafe_seen_live(self) -> list[str]:
        """Unsafe nodes or attributes that appeared in the conversation at any moment."""
        return list(self.page.evaluate("window.__unsafeNodes"))

    def assert_nothing_unsafe_happened(self, *, csp_reports_expected: bool = False) -> None:
        """No dialog, no off-origin request, no script ran, no CSP violation, no unsafe node.

        Chromium reports CSP violations when it merely parses inline handlers or styles in an
        inert DOMParser document (DOMPurify's); a test feeding raw HTML to the sanitizer sets
        ``csp_reports_expected``. The page's own path never hands it raw model HTML.
        """
        # Plain asserts here are not rewritten by pytest: each says what it found.
        guard = self.guard
        assert guard.dialogs == [], guard.dialogs
        assert guard.offsite_requests == [], guard.offsite_requests
        assert guard.page_errors == [], guard.page_errors
        pwned = self.pwned()
        assert pwned is None, pwned
        violations = self.csp_violations()
        assert csp_reports_expected or violations == [], violations
        unsafe = self.unsafe_seen_live()
        assert unsafe == [], unsafe

    def unsafe_now(self) -> list[str]:
        """Unsafe nodes or attributes in the conversation, the titles and the heading, now."""
        return list(
            self.page.evaluate(
                """() => [".messages", ".conversation-groups", ".conversation-heading"]
                    .flatMap((selector) => window.__unsafeIn(document.querySelector(selector)))"""
            )
        )


def new_chat_page(
    chromium: Browser, server: UiServer, **context_options: Any
) -> tuple[ChatPage, Callable[[], None]]:
    """A fresh browser context with the guards and traps; returns the page and its closer."""
    context = chromium.new_context(**context_options)
    guard = PageGuard(origin=server.url)
    context.route(re.compile(".*"), guard.route)
    context.add_init_script(PAGE_TRAPS)
    page = context.new_page()
    page.on("dialog", guard.on_dialog)
    page.on("console", guard.on_console)
    page.on("pageerror", lambda error: guard.page_errors.append(str(error)))
    chat = ChatPage(page, guard, server)

    def record_chat_request(request: Request) -> None:
        if request.url.endswith("/v1/chat/completions") and request.method == "POST":
            body = request.post_data_json
            assert isinstance(body, dict), body
            chat.chat_requests.append(body)
        path = urlsplit(request.url).path
        if path.startswith("/api/conversations"):
            body = request.post_data_json if request.post_data else None
            chat.history_requests.append((request.method, path, request.headers, body))

    page.on("request", record_chat_request)
    return chat, context.close
