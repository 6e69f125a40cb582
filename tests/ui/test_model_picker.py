"""The chat page on a server with two models: the picker lists both, and the chosen one answers
and is remembered by the conversation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from r1serve.api.app import create_app
from r1serve.auth import close_accounts
from r1serve.engine.fake import FakeEngine
from r1serve.engine.models import ServedModel, ServedModels
from support.accounts import test_accounts as open_accounts
from support.api import make_settings
from support.browser import ScriptedReplies, UiServer, new_chat_page, serve_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_model_server() -> Iterator[UiServer]:
    first = FakeEngine("First model here.", model_name="first-r1")
    second = FakeEngine("Second model here.", model_name="second-r1", context_length=2048)
    models = ServedModels([ServedModel("first-r1", first), ServedModel("second-r1", second)])
    settings = make_settings()
    accounts = open_accounts(settings)
    try:
        with serve_app(create_app(settings, models, accounts)) as url:
            yield UiServer(url, first, ScriptedReplies(), accounts)
    finally:
        close_accounts(accounts)


def test_picking_the_second_model_gets_its_reply(
    chromium: Browser, two_model_server: UiServer
) -> None:
    chat, close = new_chat_page(chromium, two_model_server, locale="en-US")
    try:
        chat.open()
        select = chat.page.locator(".model-select")
        expect(select).to_have_value("first-r1")  # the default
        labels = select.locator("option").all_text_contents()
        assert len(labels) == 2, labels
        assert labels[0].startswith("first-r1") and "fake" in labels[0]
        assert labels[1].startswith("second-r1") and "2k" in labels[1], labels

        select.select_option("second-r1")
        chat.send("Which model are you?")
        chat.wait_idle()
        expect(chat.page.locator(".message.assistant .answer").last).to_have_text(
            "Second model here."
        )
        conversation = chat.conversation_id()
        stored = httpx.get(f"{two_model_server.url}/api/conversations/{conversation}").json()
        assert stored["model"] == "second-r1"

        chat.assert_nothing_unsafe_happened()
    finally:
        close()

    # Another page: a new chat starts on the default; the conversation opens on its own model,
    # and its next reply comes from that model.
    again, close_again = new_chat_page(chromium, two_model_server, locale="en-US")
    try:
        again.open()
        expect(again.page.locator(".model-select")).to_have_value("first-r1")
        again.open(f"/#/c/{conversation}")
        expect(again.page.locator(".model-select")).to_have_value("second-r1")
        again.send("And now?")
        again.wait_idle()
        answers = again.page.locator(".message.assistant .answer")
        expect(answers).to_have_text(["Second model here.", "Second model here."])
        again.assert_nothing_unsafe_happened()
    finally:
        close_again()
