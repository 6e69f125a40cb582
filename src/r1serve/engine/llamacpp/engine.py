"""``LlamaCppEngine``: the Engine interface over llama.cpp's server loop, in this process.

llama.cpp (through xllamacpp) batches every running sequence into one decode step across its
``n_parallel`` slots and reuses cached prompt prefixes. r1serve keeps the queue in front of it
(bounded, 503 when full, deadlines and aborts while waiting) and admits at most one request per
slot: one worker thread per slot calls ``handle_completions``, a blocking call that streams one
chunk per sampled token to a callback. The callback turns token ids into text with r1serve's
detokenizer and stop matcher, exactly as the transformers scheduler does, and returns True to
make llama.cpp drop the sequence at its next step (cancel, deadline, stop string); tokens that
llama.cpp streams no chunk for (they end inside a character) come back from the next chunk
(``r1serve.engine.llamacpp.held``). A thinking budget or a constraint that starts after
``</think>`` continues in a new llama.cpp request (``r1serve.engine.llamacpp.sequence``);
constraints are llguidance grammars, which this llama.cpp build compiles itself, checked by
r1serve (400, time limit) before any generation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from r1serve.engine.grammar import ConstraintCompiler, llamacpp_grammar
from r1serve.engine.llamacpp.held import TokenPieces
from r1serve.engine.llamacpp.sequence import RequestState
from r1serve.engine.llamacpp.wire import Chunk, completion_body, finish_reason, parse_chunk
from r1serve.engine.protocol import (
    Delta,
    EngineStats,
    FinishedRequest,
    FinishHook,
    FinishReason,
    GenerationRequest,
    Prompt,
    Tokenizer,
    TokenLogprob,
    Usage,
    output_budget,
    with_queued,
)
from r1serve.engine.text.thinking import thinking_tokens
from r1serve.errors import ContextLengthError, OverloadedError

log = logging.getLogger("r1serve.llamacpp")

RETRY_AFTER_S = 2


class CompletionServer(Protocol):
    """The part of ``xllamacpp.Server`` the engine uses (thread-safe, blocking)."""

    def handle_completions(self, prompt: dict[str, Any], callback: Any = None) -> Any: ...


class ChatRenderer(Protocol):
    source: str

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Prompt: ...


class LlamaCppEngine:
    """Runs a GGUF model on llama.cpp's continuous-batching loop; any number of async callers."""

    def __init__(
        self,
        *,
        server: CompletionServer,
        tokenizer: Tokenizer,
        chat: ChatRenderer,
        model_name: str,
        slots: int,
        slot_tokens: int,
        model_context_length: int,
        eos_token_ids: frozenset[int],
        max_waiting: int,
        default_sampling: Mapping[str, Any] | None = None,
        listening_address: str | None = None,
        pieces: TokenPieces | None = None,
    ) -> None:
        self._server = server
        self._tokenizer = tokenizer
        self._chat = chat
        self._model_name = model_name
        self._slots = slots
        self._slot_tokens = slot_tokens
        self._context_length = min(model_context_length, slot_tokens)
        self._model_context_length = model_context_length
        self._eos = eos_token_ids
        self._max_waiting = max_waiting
        self._default_sampling: Mapping[str, Any] = dict(default_sampling or {})
        # The binding's own HTTP listener (loopback, random key); kept for the test that
        # checks it refuses requests without the key. Never printed.
        self.listening_address = listening_address
        self._listeners: list[FinishHook] = []
        self._cond = threading.Condition()
        self._waiting: deque[RequestState] = deque()  # under _cond
        self._running: dict[str, RequestState] = {}  # under _cond
        self._kv_used = 0
        self._rejected = 0
        self._prefix_hits = 0
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._thinking = thinking_tokens(tokenizer)
        self._constraints = ConstraintCompiler(None)  # checks only; llama.cpp compiles
        self._pieces = pieces  # recovers the tokens llama.cpp holds back mid-character

    # ---- Engine interface -------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def kind(self) -> str:
        return "llamacpp"

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def default_sampling(self) -> Mapping[str, Any]:
        return self._default_sampling

    @property
    def chat_template(self) -> str:
        return self._chat.source

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Prompt:
        return self._chat.render(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    def check_admission(self, pending: int = 0) -> None:
        """OverloadedError when ``submit`` would refuse now with ``pending`` more on the way."""
        with self._cond:
            self._check_room(pending)

    def _check_room(self, pending: int = 0) -> None:  # under _cond
        free = self._slots - len(self._running)
        if len(self._waiting) + pending - free >= self._max_waiting:
            self._rejected += 1
            raise OverloadedError(
                f"server busy: {self._slots} requests running and {self._max_waiting} "
                "waiting (the limit); retry later",
                retry_after=RETRY_AFTER_S,
            )

    def resolve_max_tokens(self, prompt_len: int, max_tokens: int | None) -> int:
        return output_budget(
            prompt_len, max_tokens, self._context_length, self._model_context_length
        )

    def add_finish_listener(self, listener: FinishHook) -> None:
        """Call ``listener`` (on a worker thread) whenever a request ends."""
        self._listeners.append(listener)

    async def start(self) -> None:
        if self._threads:
            return
        self._stop = False
        self._threads = [
            threading.Thread(target=self._work, name=f"r1serve-llamacpp-{i}", daemon=True)
            for i in range(self._slots)
        ]
        self._threads.append(
            threading.Thread(
                target=self._expire_waiting, name="r1serve-llamacpp-timer", daemon=True
            )
        )
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        if not self._threads:
            return
        with self._cond:
            self._stop = True
            for seq in self._running.values():
                seq.aborted = True  # each callback returns True at the next step
            self._cond.notify_all()
        threads, self._threads = self._threads, []
        await asyncio.to_thread(_join, threads)

    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(
                running=len(self._running),
                waiting=len(self._waiting),
                max_running=self._slots,
                max_waiting=self._max_waiting,
                kv_tokens_used=self._kv_used,
                kv_tokens_total=self._slots * self._slot_tokens,
                rejected=self._rejected,
                prefix_cache_hits=self._prefix_hits,
            )

    async def submit(self, request: GenerationRequest) -> LlamaCppStream:
        """Queue the request (errors raise here, before any response starts)."""
        if not request.prompt_token_ids:
            raise ContextLengthError("the prompt is empty", param="prompt")
        max_tokens = self.resolve_max_tokens(
            len(request.prompt_token_ids), request.params.max_tokens
        )
        grammar = None
        if request.params.constraint is not None:
            await self._constraints.guide(request.params.constraint)  # RequestError: a 400
            grammar = llamacpp_grammar(request.params.constraint, self._tokenizer)
        seq = RequestState(
            request, max_tokens, self._tokenizer, thinking=self._thinking, grammar=grammar
        )
        with self._cond:
            self._check_room()
            self._waiting.append(seq)
            self._cond.notify_all()
        return LlamaCppStream(self, seq)

    def abort(self, seq: RequestState) -> None:
        """Cancel a request: at once while it waits, at llama.cpp's next step while it runs."""
        with self._cond:
            seq.aborted = True
            waiting = seq in self._waiting
            if waiting:
                self._waiting.remove(seq)
        if waiting:
            self._finish(seq, "abort")

    # ---- worker threads ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                seq = self._waiting.popleft()
                self._running[seq.request.request_id] = seq
                self._kv_used += len(seq.request.prompt_token_ids)
            seq.timings.admitted = time.monotonic()
            try:
                self._generate(seq)
            except Exception as exc:  # a failure must not kill the worker
                log.exception("llama.cpp request failed")
                if seq.finish_reason is None:
                    self._finish(seq, "error", stop_reason=type(exc).__name__)

    def _generate(self, seq: RequestState) -> None:
        """Run the request's legs (usually one) until it finishes."""
        while True:
            leg = seq.next_leg()
            body = completion_body(
                seq.request, leg.max_tokens, prompt=leg.prompt, grammar=leg.grammar
            )
            self._server.handle_completions(body, lambda chunk: self._on_chunk(seq, chunk))
            if seq.finish_reason is not None:
                return
            if seq.aborted or not seq.leg_over:  # or llama.cpp ended without saying how
                self._finish(seq, "abort" if seq.aborted else "error", stop_reason="llama.cpp")
                return

    def _on_chunk(self, seq: RequestState, raw: Any) -> bool:
        """One streamed chunk; True tells llama.cpp to drop the sequence."""
        if seq.finish_reason is not None or seq.leg_over:
            return True
        if seq.aborted:
            self._finish(seq, "abort")
            return True
        chunk = parse_chunk(raw if isinstance(raw, Mapping) else {}, seq.request.params.logprobs)
        if chunk.error is not None:
            log.error("llama.cpp: %s", chunk.error)
            self._finish(seq, "error", stop_reason=chunk.error)
            return True
        tokens, logprobs = self._chunk_tokens(seq, chunk)
        for token, logprob in zip(tokens, logprobs, strict=True):
            if self._accept(seq, token, logprob):
                return True
        if seq.deadline is not None and time.monotonic() >= seq.deadline:
            self._finish(seq, "timeout")
            return True
        if chunk.finish_reason is not None:
            with self._cond:
                self._prefix_hits += chunk.cached_tokens
            self._finish(seq, finish_reason(chunk.finish_reason))
            return True
        return False

    def _chunk_tokens(
        self, seq: RequestState, chunk: Chunk
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        """The chunk's token ids with any that llama.cpp held back before them (``held``)."""
        tokens = list(chunk.token_ids)
        logprobs: list[TokenLogprob | None] = list(chunk.logprobs) or [None] * len(tokens)
        if chunk.predicted is None:
            return tokens, logprobs
        held = chunk.predicted - seq.leg_tokens - len(tokens)
        seq.leg_tokens = chunk.predicted
        if held <= 0 or not tokens:
            return tokens, logprobs
        recovered = None
        if self._pieces is not None:
            recovered = self._pieces.held_back(chunk.data, tokens, held)
        if recovered is None:
            log.warning("llama.cpp held back %d token(s) that cannot be recovered", held)
            return tokens, logprobs
        return recovered + tokens, [None] * len(recovered) + logprobs

    def _accept(self, seq: RequestState, token: int, logprob: TokenLogprob | None) -> bool:
        """Record a sampled token: emit its text, or finish (True) as the scheduler does; True
        also when the leg is over and another follows."""
        if seq.timings.first_token is None:
            seq.timings.first_token = time.monotonic()
        token, logprob = seq.observe(token, logprob)
        seq.output.append(token)
        seq.unsent.append(token)
        if logprob is not None:
            seq.unsent_logprobs.append(logprob)
        with self._cond:
            self._kv_used += 1
        params = seq.request.params
        if (token in self._eos and not params.ignore_eos) or token in params.stop_token_ids:
            self._finish(seq, "stop", stop_reason=token)
            return True
        text = seq.detok.feed([token])
        seq.watch(text)
        if seq.stops is not None and text:
            result = seq.stops.feed(text)
            text = result.text
            if result.stopped:
                self._emit(seq, text)
                self._finish(seq, "stop", stop_reason=result.matched, flush=False)
                return True
        if len(seq.output) >= seq.max_tokens:
            self._emit(seq, text)
            self._finish(seq, "length")
            return True
        self._emit(seq, text)
        if seq.ends_leg():
            seq.leg_over = True
            return True
        return False

    def _emit(self, seq: RequestState, text: str) -> None:
        if text or seq.unsent:
            seq.send(
                Delta(
                    text=text,
                    token_ids=tuple(seq.unsent),
                    logprobs=tuple(seq.unsent_logprobs),
                )
            )
            seq.unsent = []
            seq.unsent_logprobs = []

    def _finish(
        self,
        seq: RequestState,
        reason: FinishReason,
        *,
        stop_reason: str | int | None = None,
        flush: bool = True,
    ) -> None:
        seq.finish_reason = reason
        seq.timings.finished = time.monotonic()
        text = ""
        if flush and reason in ("stop", "length", "timeout"):
            text = seq.detok.flush()
            if seq.stops is not None:
                result = seq.stops.feed(text)
                text = result.text + ("" if result.stopped else seq.stops.flush())
        prompt_len = len(seq.request.prompt_token_ids)
        with self._cond:  # the slot is free before the caller sees the end
            if self._running.pop(seq.request.request_id, None) is not None:
                self._kv_used -= prompt_len + len(seq.output)
        usage = Usage(
            prompt_tokens=prompt_len,
            completion_tokens=len(seq.output),
            reasoning_tokens=seq.reasoning_tokens,
        )
        # Finish events (metrics, usage, logs) fire before the caller sees the end, so a
        # client that reads its last chunk finds the request already counted.
        record = FinishedRequest(
            seq.request.request_id, reason, prompt_len, len(seq.output), seq.timings
        )
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # a broken listener must not break generation
                log.exception("finish listener failed")
        seq.send(
            Delta(
                text=text,
                token_ids=tuple(seq.unsent),
                finish_reason=reason,
                stop_reason=stop_reason,
                usage=usage,
                logprobs=tuple(seq.unsent_logprobs),
            )
        )
        seq.unsent = []
        seq.unsent_logprobs = []

    def _expire_waiting(self) -> None:
        """Time out requests that wait past their deadline while every slot is busy."""
        while True:
            with self._cond:
                if self._stop:
                    expired = list(self._waiting)
                    self._waiting.clear()
                else:
                    now = time.monotonic()
                    expired = [s for s in self._waiting if s.deadline and now >= s.deadline]
                    for seq in expired:
                        self._waiting.remove(seq)
                    deadlines = [s.deadline for s in self._waiting if s.deadline]
                    if not expired:
                        self._cond.wait(min(deadlines) - now if deadlines else None)
                        continue
            for seq in expired:
                self._finish(seq, "abort" if self._stop else "timeout")
            if self._stop:
                return


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=30)


class LlamaCppStream:
    """The deltas of one request. Closing it, or dropping it unread, aborts the request."""

    __slots__ = ("_done", "_engine", "_seq")

    def __init__(self, engine: LlamaCppEngine, seq: RequestState) -> None:
        self._engine = engine
        self._seq = seq
        self._done = False

    def __aiter__(self) -> LlamaCppStream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        try:
            delta = with_queued(await self._seq.queue.get(), self._seq.queue)
        except BaseException:  # cancelled while waiting: the caller is gone
            await self.aclose()
            raise
        if delta.finish_reason is not None:
            self._done = True
        return delta

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._engine.abort(self._seq)

    def __del__(self) -> None:
        if not self._done:
            self._engine.abort(self._seq)
