"""Open WebUI 0.12's own chat requests, replayed byte for byte (fixtures/openwebui/README.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from r1serve.engine.fake import FakeReply
from r1serve.engine.text.tokenizer import read_tokenizer_dir
from support.api import LiveServer, sse_payloads
from support.models import TINY_ANSWER, TINY_R1_HF, TINY_RAW, TINY_REASONING

Start = Callable[..., LiveServer]
CAPTURED = Path(__file__).parent.parent / "fixtures" / "openwebui"
CHAT = CAPTURED / "chat-completions-0.12.4.json"  # the chat message, with its 36 built-in tools
TITLE = CAPTURED / "title-0.12.4.json"  # the title task it sends beside it


def r1_server(start: Start, prompts: list[str], context: int = 65536) -> LiveServer:
    """The scripted engine with tiny-r1's own chat template; the fake tokenizer is per byte."""
    template = read_tokenizer_dir(TINY_R1_HF).chat_template

    def reply(prompt: str) -> FakeReply:
        prompts.append(prompt)
        return FakeReply(chunks=[TINY_RAW[i : i + 5].encode() for i in range(0, len(TINY_RAW), 5)])

    return start(
        reply,
        model_name="tiny-r1",
        chat_template=template,
        context_length=context,
        max_seq_len=context,
    )


def post(server: LiveServer, fixture: Path) -> httpx.Response:
    """The captured body as Open WebUI's aiohttp sent it: json.dumps of the payload."""
    body = json.dumps(json.loads(fixture.read_text())).encode()
    headers = {"Content-Type": "application/json", "Accept": "*/*"}
    return httpx.post(
        f"{server.url}/v1/chat/completions", content=body, headers=headers, timeout=60
    )


def test_chat_message_with_built_in_tools_streams_reasoning_apart(live_server: Start) -> None:
    prompts: list[str] = []
    server = r1_server(live_server, prompts)
    sent = json.loads(CHAT.read_text())
    response = post(server, CHAT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = [json.loads(p) for p in payloads[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == TINY_REASONING
    assert "".join(d.get("content") or "" for d in deltas) == TINY_ANSWER
    assert not any("tool_calls" in d for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    prompt = prompts[-1]  # asked after every prefill chunk; the last one is the whole prompt
    names = [tool["function"]["name"] for tool in sent["tools"]]
    assert len(names) == 36
    assert all(f'"name": "{name}"' in prompt for name in names)  # the template saw every tool


def test_title_task_is_answered_whole(live_server: Start) -> None:
    server = r1_server(live_server, [])
    response = post(server, TITLE)
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == (TINY_ANSWER, TINY_REASONING)


def test_too_small_a_context_says_what_the_prompt_needed(live_server: Start) -> None:
    """tiny-r1's own 4096: Open WebUI shows this message in the chat, so it must say why."""
    server = r1_server(live_server, [], context=4096)
    response = post(server, CHAT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    said = r"the prompt has \d+ tokens, but this server's context is 4096 tokens"
    assert re.match(said, error["message"]), error["message"]
