"""``UpstreamEngine``: the Engine interface over another OpenAI-compatible server.

``submit`` picks a replica (fewest requests in flight), sends the prompt's messages to its
``/chat/completions`` (or the raw text to ``/completions``) with ``stream_options.include_usage``
and waits for the response status, so bad input, overload and unreachable replicas raise before
any output. A connection failure, or a 5xx, moves the request to another replica, also after
the status, as long as no text has come out yet; after that the stream ends with UpstreamError
(a clear message, sent to the client as an error event). Closing the stream closes the HTTP
response, which drops the connection: the upstream sees the client go at once and aborts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import httpx

from r1serve.engine.protocol import (
    Delta,
    EngineStats,
    FinishedRequest,
    FinishHook,
    FinishReason,
    GenerationRequest,
    Prompt,
    PromptOrigin,
    RequestTimings,
    Usage,
    output_budget,
)
from r1serve.engine.upstream.config import UpstreamConfig
from r1serve.engine.upstream.counting import PromptCounter
from r1serve.engine.upstream.replicas import Replica, ReplicaPool
from r1serve.engine.upstream.wire import (
    Chunk,
    ThinkText,
    ToolCalls,
    parse_chunk,
    request_body,
    status_error,
)
from r1serve.errors import (
    ContextLengthError,
    R1ServeError,
    UpstreamError,
)

log = logging.getLogger("r1serve.upstream")

_UNREACHABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.PoolTimeout,
)
_PLACEHOLDER = 0  # token id of a streamed chunk: only the number of them counts (metering)


class UpstreamEngine:
    """Serves one model of an upstream server (one or more replicas)."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        model: str,
        served_name: str,
        context_length: int,
        counter: PromptCounter,
    ) -> None:
        self.config = config
        self._model = model
        self._served_name = served_name
        self._context_length = context_length
        self._counter = counter
        self.pool = ReplicaPool(
            config.urls,
            model=served_name,
            limit=config.max_concurrency_per_replica,
            health_interval_s=config.health_interval_s,
        )
        self._listeners: list[FinishHook] = []
        self._client: httpx.AsyncClient | None = None

    # ---- Engine interface -------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._served_name

    @property
    def kind(self) -> str:
        return "upstream"

    @property
    def upstream_model(self) -> str:
        """The model's id on the upstream."""
        return self._model

    @property
    def counter_name(self) -> str:
        return self._counter.name

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def tokenizer(self) -> Any:
        return self._counter.tokenizer

    @property
    def default_sampling(self) -> Mapping[str, Any]:
        return {}

    @property
    def chat_template(self) -> str:
        return ""  # the upstream applies its own

    def render_chat(
        self,
        messages: Sequence[Mapping[str, object]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, object]] | None = None,
    ) -> Prompt:
        """Count the prompt (see ``counting``) and keep the messages (and tools) to send on.

        The upstream parses its model's tool calls itself (vLLM: ``--enable-auto-tool-choice``
        with a ``--tool-call-parser``); its ``tool_calls`` come back re-expressed in the
        ``<tool_call>`` JSON form (``tool_format`` "hermes"), so r1serve's own parser, and with
        it the OpenAI, Ollama and conversation APIs, treat them as a local model's calls."""
        prompt = self._counter.chat(messages)
        if not tools:
            return prompt
        origin = replace(prompt.origin or PromptOrigin(tuple(messages)), tools=tuple(tools))
        return replace(prompt, tool_format="hermes", origin=origin)

    def resolve_max_tokens(self, prompt_len: int, max_tokens: int | None) -> int:
        return output_budget(prompt_len, max_tokens, self._context_length)

    def headers(self) -> dict[str, str]:
        """Request headers: the API key from the named variable, read when used, never kept."""
        key = os.environ.get(self.config.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def start(self) -> None:
        if self._client is None:
            c = self.config
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=c.connect_timeout_s,
                    read=c.chunk_timeout_s,
                    write=c.connect_timeout_s,
                    pool=c.connect_timeout_s,
                ),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            await asyncio.gather(
                *(self.pool.probe(r, self._client, self.headers()) for r in self.pool)
            )
            self.pool.start(self._client, self.headers)

    async def close(self) -> None:
        await self.pool.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        close = getattr(self._counter, "close", None)
        if close is not None:
            close()

    def check_admission(self, pending: int = 0) -> None:
        self.pool.check(pending)

    async def submit(self, request: GenerationRequest) -> UpstreamStream:
        if self._client is None:
            await self.start()
        if self._counter.exact and request.params.max_tokens is not None:
            output_budget(
                len(request.prompt_token_ids), request.params.max_tokens, self._context_length
            )
        elif self._counter.exact and len(request.prompt_token_ids) >= self._context_length:
            raise ContextLengthError(
                f"the prompt has {len(request.prompt_token_ids)} tokens, but the upstream's "
                f"context is {self._context_length} tokens"
            )
        path, body = request_body(self._model, request)
        stream = UpstreamStream(self, request, path, body)
        await stream.open()
        return stream

    def add_finish_listener(self, listener: FinishHook) -> None:
        self._listeners.append(listener)

    def finished(self, done: FinishedRequest) -> None:
        for listener in self._listeners:
            try:
                listener(done)
            except Exception:
                log.exception("finish listener failed")

    def stats(self) -> EngineStats:
        replicas = list(self.pool)
        running = sum(r.outstanding for r in replicas)
        return EngineStats(
            running=running, waiting=0, max_running=sum(r.limit for r in replicas), max_waiting=0
        )

    def metric_registries(self) -> list[Any]:
        """Registries /metrics includes: the per-replica counters."""
        return [self.pool.metrics.registry]

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None
        return self._client


class _Deadline(Exception):
    """The request's own time limit passed (finish reason "timeout")."""


class UpstreamStream:
    """One request's deltas from an upstream; ``aclose`` drops the upstream connection."""

    def __init__(
        self, engine: UpstreamEngine, request: GenerationRequest, path: str, body: dict[str, Any]
    ) -> None:
        self._engine = engine
        self._request = request
        self._path = path
        self._body = body
        self._tried: list[Replica] = []
        self._replica: Replica | None = None
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._think = ThinkText()
        self._tools = ToolCalls()
        self._emitted = 0  # chunks with text passed on (0: a failure may still move replicas)
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._done = False
        self._sent_at: float | None = None
        now = time.monotonic()
        self._timings = RequestTimings(submitted=now)
        self._deadline = now + request.timeout_s if request.timeout_s else None

    # ---- opening, with failover -------------------------------------------------------

    async def open(self) -> None:
        """Send to a replica and wait for its status; move on while a replica is unreachable."""
        pool = self._engine.pool
        last: R1ServeError | None = None
        while True:
            try:
                replica = pool.pick(self._tried)
            except R1ServeError:
                if last is not None:
                    raise last from None
                raise
            self._tried.append(replica)
            self._replica = replica
            self._sent_at = time.monotonic()
            try:
                last = await self._send(replica)
            except BaseException:
                self._release()
                raise
            if last is None:
                self._timings.admitted = time.monotonic()
                return
            self._release()

    async def _send(self, replica: Replica) -> R1ServeError | None:
        """None when the stream is open; a retryable error when another replica may serve it."""
        client, pool = self._engine.client, self._engine.pool
        url = f"{replica.url}/{self._path}"
        try:
            req = client.build_request("POST", url, json=self._body, headers=self._engine.headers())
            response = await client.send(req, stream=True)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                pool.failed(replica, "connect", f"connect timed out: {exc!r}", eject=True)
                return UpstreamError(f"{replica.name} could not be reached (timeout)")
            pool.failed(replica, "timeout", repr(exc), eject=False)
            raise UpstreamError(
                f"{replica.name} did not answer within {self._engine.config.chunk_timeout_s:g} s",
                status_code=504,
            ) from None
        except _UNREACHABLE as exc:
            pool.failed(replica, "connect", f"{type(exc).__name__}: {exc}"[:300], eject=True)
            return UpstreamError(f"{replica.name} could not be reached: {exc}")
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await response.aclose()
            try:
                body: object = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            error = status_error(response.status_code, body, replica.name)
            log.warning("%s (%s): HTTP %d", replica.name, replica.url, response.status_code)
            pool.failed(replica, "status", f"HTTP {response.status_code}", eject=False)
            if response.status_code >= 500 or response.status_code == 429:
                return error  # another replica may take it
            raise error
        self._response = response
        self._lines = response.aiter_lines()
        return None

    def _release(self) -> None:
        if self._replica is not None:
            took = None if self._sent_at is None else time.monotonic() - self._sent_at
            self._engine.pool.release(self._replica, took)
            self._replica = None

    # ---- reading ----------------------------------------------------------------------

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        while True:
            try:
                chunk = await self._next_chunk()
            except _Deadline:
                return await self._final("", "timeout")
            except R1ServeError:
                await self._end("error")
                raise
            if chunk is None:  # [DONE]
                return await self._final("")
            text = self._think.feed(chunk)
            if chunk.usage is not None:
                self._usage = chunk.usage
            if chunk.finish_reason is not None:
                self._finish = chunk.finish_reason
            if chunk.tool_calls:
                self._tools.feed(chunk.tool_calls)
            if text:
                self._emitted += 1
                if self._timings.first_token is None:
                    self._timings.first_token = time.monotonic()
                return Delta(text, token_ids=(_PLACEHOLDER,))

    async def _next_chunk(self) -> Chunk | None:
        """The next parsed chunk; None at ``[DONE]`` (or a clean end after the finish)."""
        while True:
            line = await self._read_line()
            if line is None:
                if self._finish is not None:
                    return None
                error = await self._failed("closed the stream before the reply finished")
                if error is not None:
                    raise error
                continue
            if not line.startswith("data:"):
                continue  # blank separators, ": ping" comments, "event:" lines
            data = line[5:].strip()
            if data == "[DONE]":
                return None
            if data:
                return parse_chunk(data)

    async def _read_line(self) -> str | None:
        """One line of the body (None at its end), with failover while nothing came out."""
        while True:
            assert self._lines is not None
            remaining = None
            if self._deadline is not None:
                remaining = self._deadline - time.monotonic()
            try:
                async with asyncio.timeout(remaining if remaining is None else max(0, remaining)):
                    return await anext(self._lines)
            except StopAsyncIteration:
                return None
            except TimeoutError:
                raise _Deadline() from None
            except httpx.ReadTimeout:
                replica = self._replica
                if replica is not None:
                    self._engine.pool.failed(replica, "timeout", "chunk timeout", eject=False)
                raise UpstreamError(
                    f"upstream sent nothing for {self._engine.config.chunk_timeout_s:g} s",
                    status_code=504,
                ) from None
            except _UNREACHABLE as exc:
                error = await self._failed(f"dropped the connection ({type(exc).__name__})")
                if error is not None:
                    raise error from None

    async def _failed(self, what: str) -> UpstreamError | None:
        """Move to another replica if no text came out yet (None: moved), else the error."""
        replica = self._replica
        name = replica.name if replica is not None else "upstream"
        if replica is not None:
            self._engine.pool.failed(replica, "stream", what, eject=True)
            log.warning("%s (%s) %s mid-reply", replica.name, replica.url, what)
        await self._close_response()
        error = UpstreamError(
            f"{name} {what} after {self._emitted} chunks; the reply is incomplete"
        )
        if self._emitted == 0 and self._finish is None:
            self._release()
            self._think = ThinkText()
            try:
                await self.open()
            except R1ServeError:
                return error
            return None
        return error

    async def _final(self, text: str, reason: FinishReason | None = None) -> Delta:
        if reason is None:  # a whole reply: its tool calls, if any, end it
            calls = self._tools.text()
            text = f"{text}{calls}" if calls else text
        counted = self._emitted
        chunks = self._think.reasoning_chunks  # about one token each, where usage does not say
        usage = self._usage or Usage(len(self._request.prompt_token_ids), counted, chunks)
        if not usage.reasoning_tokens and chunks:
            usage = replace(usage, reasoning_tokens=min(chunks, usage.completion_tokens))
        extra = max(0, usage.completion_tokens - counted)
        reason = reason or self._finish or "stop"
        await self._end(reason, usage)
        return Delta(text, token_ids=(_PLACEHOLDER,) * extra, finish_reason=reason, usage=usage)

    async def _end(self, reason: FinishReason, usage: Usage | None = None) -> None:
        if self._done:
            return
        self._done = True
        try:
            # A reply read to its end leaves a reusable connection; any other end cuts it.
            await self._close_response(hard=reason in ("abort", "timeout", "error"))
        finally:
            self._release()
        self._timings.finished = time.monotonic()
        self._engine.finished(
            FinishedRequest(
                self._request.request_id,
                reason,
                usage.prompt_tokens if usage else len(self._request.prompt_token_ids),
                usage.completion_tokens if usage else self._emitted,
                self._timings,
            )
        )

    async def _close_response(self, hard: bool = True) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        if hard:
            # Cut the connection itself: a read cancelled mid-body can leave httpx believing
            # the connection reusable, and the upstream would then stream on into the void.
            network = response.extensions.get("network_stream")
            if network is not None:
                with contextlib.suppress(Exception):
                    await network.aclose()
        with contextlib.suppress(Exception):  # after a cut, httpcore may complain of it
            await response.aclose()

    async def aclose(self) -> None:
        """Abort: drop the upstream connection now (the upstream then cancels its request).

        Shielded: a client's disconnect cancels the response's task (anyio cancellation hits
        every later await), and the upstream must still hear of it at once, not at GC."""
        with anyio.CancelScope(shield=True):
            await self._end("abort")
