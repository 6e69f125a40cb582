"""The settings panel, export and import, dark mode and the phone-width drawer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from r1serve.engine.fake import FakeReply
from support import history
from support.browser import ChatPage, UiServer

pytestmark = pytest.mark.browser


def test_settings_panel_is_kept_per_conversation(chat: ChatPage) -> None:
    page = chat.page
    panel = page.locator(".settings-panel")
    expect(panel).to_be_hidden()
    page.locator(".settings-toggle").click()
    expect(panel).to_be_visible()
    page.locator(".system-prompt").fill("You are a terse pirate.")
    page.locator(".setting-temperature").fill("0.3")
    page.locator(".setting-max_tokens").fill("64")
    page.locator(".settings-save").click()
    expect(page.locator(".settings-status")).to_contain_text("saved with the first message")

    chat.server.replies.set(FakeReply("Arr."))
    chat.send("hello")
    chat.wait_idle()
    conversation = chat.conversation_id()
    stored = history.get(chat.server, conversation)
    assert stored["system_prompt"] == "You are a terse pirate."
    assert stored["settings"]["temperature"] == 0.3 and stored["settings"]["max_tokens"] == 64
    assert "You are a terse pirate." in chat.server.replies.prompts[-1]

    page.locator(".setting-temperature").fill("1.1")
    page.locator(".setting-max_tokens").fill("")
    page.locator(".settings-save").click()
    expect(page.locator(".settings-status")).to_have_text("Saved.")
    settings = history.get(chat.server, conversation)["settings"]
    assert settings["temperature"] == 1.1 and settings.get("max_tokens") is None

    # Out of range: the browser refuses before anything is sent.
    patches = len(chat.requests_to("PATCH", conversation))
    page.locator(".setting-top_p").fill("1.5")
    page.locator(".settings-save").click()
    assert page.locator(".setting-top_p").evaluate("input => !input.validity.valid")
    assert len(chat.requests_to("PATCH", conversation)) == patches
    page.locator(".setting-top_p").fill("")

    # A new chat starts from defaults; the first conversation keeps its own.
    page.locator(".new-chat").click()
    expect(page.locator(".system-prompt")).to_have_value("")
    expect(page.locator(".setting-temperature")).to_have_value("")
    page.locator(f".conversation-item[data-id='{conversation}'] .conversation-open").click()
    expect(page.locator(".system-prompt")).to_have_value("You are a terse pirate.")
    expect(page.locator(".setting-temperature")).to_have_value("1.1")


def download_text(page: Page, menu: str, button: str) -> tuple[str, str]:
    """Open a menu, click an export button; (file name, text) of the download."""
    page.locator(f"{menu} > summary").click()
    with page.expect_download() as info:
        page.locator(button).click()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_text(encoding="utf-8")


def test_export_downloads_and_import_brings_it_back(chat: ChatPage, tmp_path: Path) -> None:
    page = chat.page
    chat.server.replies.set(FakeReply("<think>\nhm\n</think>\n\nExported answer."))
    chat.send("Export me")
    chat.wait_idle()
    original = chat.conversation_id()

    name, text = download_text(page, ".export-menu", ".export-one[data-format=json]")
    assert name.endswith(".json")
    exported = json.loads(text)
    assert "Export me" in text and "Exported answer." in text

    name, text = download_text(page, ".export-menu", ".export-one[data-format=markdown]")
    assert name.endswith(".md")
    assert "Export me" in text and "Exported answer." in text

    name, text = download_text(page, ".sidebar-menu", ".export-all[data-format=json]")
    assert name.endswith(".json") and "Exported answer." in text
    name, text = download_text(page, ".sidebar-menu", ".export-all[data-format=markdown]")
    assert name.endswith(".md") and "Export me" in text

    page.locator(".sidebar-menu > summary").click()
    page.locator(".import-file").set_input_files(
        files=[
            {
                "name": "conversation.json",
                "mimeType": "application/json",
                "buffer": json.dumps(exported).encode(),
            }
        ]
    )
    expect(page.locator(".status")).to_have_text("Imported 1 conversation(s).")
    expect(page.locator(".conversation-item")).to_have_count(2)
    expect(page.locator(".chat")).not_to_have_attribute("data-conversation", original)
    expect(page.locator(".message.user .user-text")).to_have_text(["Export me"])
    expect(page.locator(".message.assistant .answer")).to_have_text("Exported answer.")

    page.locator(".sidebar-menu > summary").click()
    page.locator(".import-file").set_input_files(
        files=[{"name": "notes.json", "mimeType": "application/json", "buffer": b"not json"}]
    )
    expect(page.locator(".status")).to_have_text("Error: notes.json is not a JSON export.")
    expect(page.locator(".conversation-item")).to_have_count(2)


def background_brightness(page: Page) -> int:
    colour = page.evaluate("getComputedStyle(document.body).backgroundColor")
    return sum(int(value) for value in re.findall(r"\d+", colour)[:3])


def test_dark_mode_follows_the_system_and_can_be_switched(
    open_chat: Callable[..., ChatPage],
) -> None:
    chat = open_chat(color_scheme="dark")
    page = chat.page
    picker = page.locator("#theme-select")
    expect(picker).to_have_value("system")
    assert background_brightness(page) < 150

    menu = page.locator(".user-menu > summary")  # theme and language are in the user menu
    menu.click()
    picker.select_option("light")
    assert background_brightness(page) > 600
    light_code = page.locator("link[data-code-theme=light]")
    expect(light_code).to_have_attribute("media", "all")

    page.reload()
    chat.wait_ready()
    expect(picker).to_have_value("light")
    assert background_brightness(page) > 600

    menu.click()
    picker.select_option("dark")
    assert background_brightness(page) < 150
    expect(page.locator("link[data-code-theme=dark]")).to_have_attribute("media", "all")
    expect(light_code).to_have_attribute("media", "not all")
    page.locator("#language-select").select_option("zh-CN")
    expect(picker.locator("option:checked")).to_have_text("深色")


def test_phone_width_puts_the_conversations_in_a_drawer(
    ui_server: UiServer, open_chat: Callable[..., ChatPage]
) -> None:
    earlier = history.create(ui_server)
    ui_server.replies.set(FakeReply("Hello from before."))
    history.send(ui_server, earlier["id"], "An earlier chat")
    chat = open_chat(viewport={"width": 375, "height": 700})
    page = chat.page
    sidebar = page.locator(".sidebar")
    toggle = page.locator(".drawer-toggle")
    expect(sidebar).to_be_hidden()
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    toggle.click()
    expect(sidebar).to_be_in_viewport()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.locator(".conversation-item .conversation-open").click()
    expect(sidebar).to_be_hidden()
    expect(page.locator(".message.assistant .answer")).to_have_text("Hello from before.")

    toggle.click()
    expect(sidebar).to_be_visible()
    page.mouse.click(360, 350)  # the backdrop, right of the drawer
    expect(sidebar).to_be_hidden()

    page.locator(".settings-toggle").click()
    expect(page.locator(".settings-save")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(page.locator(".composer-input")).to_be_in_viewport()
