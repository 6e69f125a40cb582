"""A terminal chat against a running server or an in-process engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from r1serve.client.sse import iter_json
from r1serve.errors import R1ServeError


@dataclass(frozen=True, slots=True)
class Piece:
    """A streamed piece of a reply: reasoning or answer text."""

    reasoning: str = ""
    content: str = ""
    finish_reason: str | None = None


class Backend(Protocol):
    def stream(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> Iterator[Piece]: ...


class RemoteBackend:
    """Streams from ``/v1/chat/completions`` of a server."""

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=None)
        self.model = model

    def stream(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Iterator[Piece]:
        body = {"messages": messages, "stream": True, **options}
        if self.model:
            body["model"] = self.model
        try:
            with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise R1ServeError(_error_text(response))
                for chunk in iter_json(response):
                    if "error" in chunk:
                        raise R1ServeError(str(chunk["error"].get("message", chunk["error"])))
                    for choice in chunk.get("choices", []):
                        delta = choice.get("delta", {})
                        yield Piece(
                            reasoning=delta.get("reasoning_content") or "",
                            content=delta.get("content") or "",
                            finish_reason=choice.get("finish_reason"),
                        )
        except httpx.HTTPError as exc:
            raise R1ServeError(f"cannot reach {self.http.base_url}: {exc}") from None


def _error_text(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


class LocalBackend:
    """Runs an engine in this process (no server needed)."""

    def __init__(self, service: Any) -> None:
        from r1serve.api.service import CompletionService

        self.service: CompletionService = service
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.service.engine.start())

    def stream(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Iterator[Piece]:
        from r1serve.api.schemas import ChatCompletionRequest

        request = ChatCompletionRequest.model_validate({"messages": messages, **options})

        async def submit() -> Any:  # the engine needs a running loop to hand results to
            prompt = self.service.chat_prompt(request)
            return await self.service.start("chat", [prompt], self.service.sampling(request))

        outputs = self.loop.run_until_complete(submit())
        iterator = outputs.__aiter__()
        try:
            while True:
                try:
                    out = self.loop.run_until_complete(iterator.__anext__())
                except StopAsyncIteration:
                    return
                yield Piece(out.reasoning, out.content, out.finish_reason)
        finally:
            self.loop.run_until_complete(outputs.aclose())

    def close(self) -> None:
        self.loop.run_until_complete(self.service.engine.close())
        self.loop.close()


@dataclass
class ChatSession:
    """The conversation so far; earlier answers go back without their reasoning."""

    backend: Backend
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)

    def ask(self, text: str, on_piece: Callable[[Piece], None]) -> Piece:
        """Send a user message, call ``on_piece`` for each streamed piece; the whole reply.

        Ctrl+C stops the reply: the stream is closed (so the server stops generating), the
        part received so far stays in the conversation, and the finish reason is
        ``interrupted``; the session goes on.
        """
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            *self.history,
            {"role": "user", "content": text},
        ]
        reasoning, content, finish = [], [], None
        stream = self.backend.stream(messages, self.options)
        try:
            for piece in stream:
                on_piece(piece)
                reasoning.append(piece.reasoning)
                content.append(piece.content)
                finish = piece.finish_reason or finish
        except KeyboardInterrupt:
            finish = "interrupted"
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a generator left mid-reply: closing it closes the HTTP stream
        answer = "".join(content)
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
        return Piece("".join(reasoning), answer, finish)

    def reset(self) -> None:
        self.history.clear()
