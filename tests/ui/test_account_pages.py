"""The page with logins on: login, my keys (copy once), my usage, admin users, logout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from support.accounts import ADMIN_PASSWORD, secure_settings
from support.browser import ChatPage, UiServer, new_chat_page, run_ui_server
from support.layout import AXE, DESKTOP, PHONE, serious_violations, shoot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server() -> Iterator[UiServer]:
    with run_ui_server(secure_settings(login_max_failures_per_ip=1000)) as server:
        server.accounts.users.create("ada", "ada-password")
        yield server


@pytest.fixture
def open_page(chromium: Browser, server: UiServer) -> Iterator[Callable[..., ChatPage]]:
    closers: list[Callable[[], None]] = []

    def open_one(**context_options: Any) -> ChatPage:
        context_options.setdefault("locale", "en-US")
        page, close = new_chat_page(chromium, server, **context_options)
        closers.append(close)
        page.page.goto(server.url + "/")
        return page

    yield open_one
    for close in closers:
        close()


def from_menu(page: Page, selector: str) -> None:
    """Click an item of the user menu (views, Log out), opening the menu first."""
    if page.locator(".user-menu[open]").count() == 0:
        page.click(".user-menu > summary")
    page.click(selector)


def log_in(page: Page, username: str, password: str) -> None:
    page.fill(".login-username", username)
    page.fill(".login-password", password)
    page.click(".login-form button[type=submit]")


def test_login_shows_the_chat_and_the_cookie_stays_out_of_reach(
    open_page: Callable[..., ChatPage],
) -> None:
    chat = open_page()
    page = chat.page
    expect(page.locator(".login-form h1")).to_have_text("Log in")
    expect(page.locator("#account-nav")).to_be_hidden()
    log_in(page, "ada", "wrong-password")
    expect(page.locator(".login-form .status")).to_have_text("Wrong user name or password.")
    log_in(page, "ada", "ada-password")
    page.wait_for_selector(".chat[data-models=loaded]")
    expect(page.locator(".nav-user")).to_have_text("ada")
    expect(page.locator(".nav-link[data-view=users]")).to_have_count(0)  # not an admin
    assert "r1s_session" not in page.evaluate("document.cookie")  # HttpOnly
    cookie = next(c for c in page.context.cookies() if c["name"] == "r1s_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    chat.server.replies.set(
        __import__("r1serve.engine.fake", fromlist=["FakeReply"]).FakeReply("Hi Ada!")
    )
    chat.send("hello")  # the stream is a POST with the cookie: it needs the CSRF token
    chat.wait_idle()
    expect(page.locator(".message.assistant").last).to_contain_text("Hi Ada!")
    chat.assert_nothing_unsafe_happened()


def test_a_key_is_shown_once_copied_and_works(
    open_page: Callable[..., ChatPage], server: UiServer
) -> None:
    chat = open_page()
    page = chat.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, "ada", "ada-password")
    from_menu(page, ".nav-link[data-view=keys]")
    page.fill(".key-form input[name=name]", "laptop")
    page.click(".key-form button[type=submit]")
    value = page.locator(".new-key-value")
    expect(value).to_contain_text("r1s-")
    key = value.inner_text()
    expect(page.locator(".new-key .warning")).to_contain_text("shown only once")
    page.click(".copy-key")
    expect(page.locator(".copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    page.click(".dismiss-key")
    expect(value).to_have_count(0)
    row = page.locator(f".keys-table tr[data-prefix='{key[:12]}']")
    expect(row).to_contain_text("laptop")
    assert key not in page.content()
    page.reload()
    from_menu(page, ".nav-link[data-view=keys]")
    expect(page.locator(f".keys-table tr[data-prefix='{key[:12]}']")).to_contain_text("active")
    assert key not in page.content()
    assert httpx.get(f"{server.url}/v1/models", headers={"X-API-Key": key}).status_code == 200
    # Revoke asks once more in place, then the key stops working.
    revoke = page.locator(f".keys-table tr[data-prefix='{key[:12]}'] .revoke-key")
    revoke.click()
    expect(revoke).to_have_text("Really revoke?")
    revoke.click()
    expect(page.locator(f".keys-table tr[data-prefix='{key[:12]}']")).to_contain_text("revoked")
    assert httpx.get(f"{server.url}/v1/models", headers={"X-API-Key": key}).status_code == 401
    chat.assert_nothing_unsafe_happened()


def test_logout_ends_the_session(open_page: Callable[..., ChatPage]) -> None:
    chat = open_page()
    page = chat.page
    log_in(page, "ada", "ada-password")
    page.wait_for_selector(".chat[data-models=loaded]")
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "r1s_session")
    from_menu(page, ".logout")
    expect(page.locator(".login-form")).to_be_visible()
    assert page.evaluate("fetch('/api/auth/me').then((r) => r.status)") == 401
    page.reload()
    expect(page.locator(".login-form")).to_be_visible()
    stolen = httpx.get(f"{chat.server.url}/api/auth/me", cookies={"r1s_session": token})
    assert stolen.status_code == 401  # ended on the server, not just forgotten by the browser
    chat.assert_nothing_unsafe_happened()


def test_usage_view_shows_my_requests(open_page: Callable[..., ChatPage]) -> None:
    chat = open_page()
    page = chat.page
    log_in(page, "ada", "ada-password")
    page.wait_for_selector(".chat[data-models=loaded]")
    chat.send("count me")
    chat.wait_idle()
    chat.server.accounts.usage.flush()
    from_menu(page, ".nav-link[data-view=usage]")
    # The page chats through the conversation API, and that use is counted too.
    expect(page.locator(".usage-view table").last).to_contain_text(
        "/api/conversations/{conversation_id}/messages"
    )
    expect(page.locator(".tokens-today")).to_contain_text("no daily limit")
    chat.assert_nothing_unsafe_happened()


def test_admin_adds_a_user_and_sees_the_password_once(open_page: Callable[..., ChatPage]) -> None:
    chat = open_page()
    page = chat.page
    log_in(page, "admin", ADMIN_PASSWORD)
    from_menu(page, ".nav-link[data-view=users]")
    page.fill(".user-form input[name=username]", "grace")
    page.click(".user-form button[type=submit]")
    password = page.locator(".new-password-value")
    expect(password).not_to_be_empty()
    generated = password.inner_text()
    expect(page.locator(".users-table tr[data-username=grace]")).to_contain_text("grace")
    assert chat.server.accounts.sessions.login("grace", generated, "::1").principal
    chat.assert_nothing_unsafe_happened()


def test_login_screen_speaks_chinese(open_page: Callable[..., ChatPage]) -> None:
    chat = open_page(locale="zh-CN")
    expect(chat.page.locator(".login-form h1")).to_have_text("登录")
    chat.page.click(".user-menu > summary")
    chat.page.select_option("#language-select", "en")
    expect(chat.page.locator(".login-form h1")).to_have_text("Log in")


def test_a_view_re_rendering_around_a_form_keeps_its_focus_and_typing(chat: ChatPage) -> None:
    # The account views re-render when their data arrives; the kept forms must not move, or a
    # user typing at that moment loses the focus (and the keys they press go nowhere).
    result = chat.page.evaluate(
        """async () => {
            const { fill, h } = await import("/static/views/dom.js");
            const view = h("section");
            document.body.append(view);
            const input = h("input", { name: "name" });
            const form = h("form", {}, input);
            fill(view, h("h1", {}, "Keys"), form, h("p", {}, "no keys yet"));
            input.focus();
            input.value = "lap";
            fill(view, h("h1", {}, "Keys"), h("p", {}, "created"), form, "a table", 7);
            const kept = document.activeElement === input && input.value === "lap";
            const texts = [...view.childNodes].map((node) => node.textContent);
            view.remove();
            return { kept, texts };
        }"""
    )
    assert result == {"kept": True, "texts": ["Keys", "created", "", "a table", "7"]}


def test_change_password_from_the_user_menu(
    open_page: Callable[..., ChatPage], server: UiServer
) -> None:
    server.accounts.users.create("pat", "pat-password")
    chat = open_page()
    page = chat.page
    log_in(page, "pat", "pat-password")
    page.wait_for_selector(".chat[data-models=loaded]")
    from_menu(page, ".change-password")
    dialog = page.locator(".password-dialog")
    expect(dialog).to_be_visible()
    dialog.locator(".current-password").fill("pat-password")
    dialog.locator(".new-password").fill("pat-new-password")
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator(".dialog-status")).to_contain_text("Password changed")
    assert server.accounts.sessions.login("pat", "pat-new-password", "::1").principal
    dialog.locator(".dialog-close").click()
    expect(dialog).to_have_count(0)
    chat.assert_nothing_unsafe_happened()


@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_login_page_passes_axe_and_is_photographed(
    open_page: Callable[..., ChatPage], size: str, viewport: dict[str, int]
) -> None:
    chat = open_page(viewport=viewport)
    page = chat.page
    page.context.add_init_script(path=str(AXE))
    page.reload()
    expect(page.locator(".login-form h1")).to_have_text("Log in")
    assert serious_violations(page) == []
    shoot(page, f"login-{size}")
