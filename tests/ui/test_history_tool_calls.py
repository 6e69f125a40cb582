"""A stored conversation with a tool call and a tool result: shown folded, readable, inert."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from r1serve.engine.fake import FakeReply
from r1serve.engine.text.tool_format import write_calls
from support import history
from support.browser import ChatPage

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=\"window.__pwned = 'tool'\">"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


def test_a_tool_call_and_its_result_render_without_page_errors(chat: ChatPage) -> None:
    server = chat.server
    arguments = json.dumps({"q": EVIL, "n": 2})
    server.replies.set(FakeReply(write_calls("hermes", [("lookup", arguments)])))
    # The tool result's prompt ends with a <tool_response> turn: answer that with text.
    server.replies.when("<tool_response>", FakeReply(f"Found it: {EVIL}"))
    made = history.create(server, title="Tools", settings={"tools": [LOOKUP]})
    cid = made["id"]
    history.send(server, cid, "Look it up")
    called = history.get(server, cid)["messages"][1]
    [call] = called["tool_calls"]
    with history.client(server) as http:
        path = f"{history.BASE}/{cid}/messages/{called['id']}/tool-results"
        body = {"results": [{"tool_call_id": call["id"], "content": json.dumps({"hit": EVIL})}]}
        with http.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            for _ in response.iter_lines():
                pass
    assert [m["role"] for m in history.wait_until_idle(server, cid)["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]

    page = chat.page
    page.reload()
    chat.wait_ready()
    page.locator(f".conversation-item[data-id='{cid}'] .conversation-open").click()
    expect(page.locator(".message.assistant")).to_have_count(2)
    block = page.locator(".message.assistant .tool-call")
    expect(block).to_have_count(1)
    expect(block.locator("summary")).to_have_text("Tool call: lookup")
    expect(block.locator(".tool-arguments")).to_be_hidden()  # folded until opened
    block.locator("summary").click()
    expect(block.locator(".tool-arguments")).to_have_text(json.dumps({"q": EVIL, "n": 2}, indent=2))
    expect(page.locator(".message.assistant").first.locator(".message-meta")).to_contain_text(
        "Waiting for tool results."
    )
    result = page.locator(".message.tool .tool-result")
    expect(result.locator("summary")).to_have_text(f"Tool result ({call['id']})")
    result.locator("summary").click()
    expect(result.locator(".tool-output")).to_have_text(json.dumps({"hit": EVIL}, indent=2))
    expect(page.locator(".message.assistant").last.locator(".answer")).to_contain_text(
        "Found it: <img"
    )
    # A tool message has no actions of its own; the page still works around it.
    expect(page.locator(".message.tool .message-actions")).to_have_count(0)
    page.wait_for_timeout(300)  # give anything that was going to fire (onerror) time
    chat.assert_nothing_unsafe_happened()
    assert chat.unsafe_now() == []
