"""The API docs page works offline, under the same CSP, from vendored Swagger UI."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from support.browser import UiServer

pytestmark = pytest.mark.browser


def test_docs_page_lists_the_api(chromium: Browser, ui_server: UiServer) -> None:
    context = chromium.new_context()
    page = context.new_page()
    requests: list[str] = []
    violations: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    try:
        response = page.goto(f"{ui_server.url}/docs")
        assert (
            response is not None
            and "script-src 'self'" in response.headers["content-security-policy"]
        )
        expect(page.get_by_text("/v1/chat/completions").first).to_be_visible()
        assert all(url.startswith(ui_server.url) for url in requests), requests
        assert violations == []
    finally:
        context.close()
