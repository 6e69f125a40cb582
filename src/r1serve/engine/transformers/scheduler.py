"""Continuous batching: one thread owns the model; requests join and leave between steps.

Requests enter through ``submit`` (any thread) into a bounded FIFO. The scheduler thread admits
them into free KV slots in arrival order, runs their prompts in chunks (a bounded number of
prompt tokens per iteration, so running streams never stall for long), then decodes every
running sequence together, one token per step. Each request has its own sampler, detokenizer
and stop matcher; results cross into asyncio with ``loop.call_soon_threadsafe``, one call per
step for all sequences. ``abort`` removes a request before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from r1serve.engine.grammar import Guide
from r1serve.engine.protocol import (
    Delta,
    EngineStats,
    FinishedRequest,
    FinishHook,
    FinishReason,
    GenerationRequest,
    RequestTimings,
    Tokenizer,
    TokenLogprob,
    Usage,
)
from r1serve.engine.text.detokenize import IncrementalDetokenizer
from r1serve.engine.text.stops import StopMatcher
from r1serve.engine.text.thinking import ThinkingTokens, ThinkingTracker, prompt_opens_thinking
from r1serve.engine.transformers.guided import mask_logits
from r1serve.engine.transformers.runner import DecodeInput, ModelRunner, PrefillChunk
from r1serve.engine.transformers.sampling import (
    SequenceSampler,
    adjust_logits,
    sample,
    token_logprobs,
)
from r1serve.errors import OverloadedError

log = logging.getLogger("r1serve.scheduler")


IDLE_PREFILL_FACTOR = 8  # prefill budget multiplier while no sequence is decoding


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_waiting: int = 256  # bounded queue; beyond it submit() raises OverloadedError (503)
    max_prefill_tokens: int = 256  # prompt tokens run per iteration (chunked prefill)
    retry_after_s: int = 2


class Channel:
    """The asyncio side of one request: deltas arrive on ``queue``."""

    __slots__ = ("loop", "queue", "request_id")

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self.loop = loop
        self.queue: asyncio.Queue[Delta] = asyncio.Queue()


class Sequence_:
    """Scheduler-thread state of one request."""

    __slots__ = (
        "channel",
        "computed",
        "deadline",
        "detok",
        "finish_reason",
        "guide",
        "max_tokens",
        "next_token",
        "output",
        "prompt",
        "request",
        "sampler",
        "slot",
        "stops",
        "thinking",
        "timings",
        "unsent_ids",
        "unsent_logprobs",
    )

    def __init__(
        self,
        request: GenerationRequest,
        channel: Channel,
        tokenizer: Tokenizer,
        vocab_size: int,
        max_tokens: int,
        eos_token_ids: frozenset[int],
        guide: Guide | None = None,
        thinking: ThinkingTokens | None = None,
    ) -> None:
        now = time.monotonic()
        self.request = request
        self.channel = channel
        self.prompt = list(request.prompt_token_ids)
        self.output: list[int] = []
        self.unsent_ids: list[int] = []
        self.unsent_logprobs: list[TokenLogprob] = []
        self.max_tokens = max_tokens
        self.computed = 0  # tokens whose KV is cached
        self.slot: int | None = None
        self.next_token: int | None = None  # sampled, not yet fed to the model
        self.sampler = SequenceSampler(
            request.params, self.prompt, vocab_size, eos_token_ids=eos_token_ids
        )
        self.detok = IncrementalDetokenizer(tokenizer, self.prompt)
        self.stops = StopMatcher(request.params.stop) if request.params.stop else None
        self.timings = RequestTimings(submitted=now)
        self.deadline = now + request.timeout_s if request.timeout_s else None
        self.finish_reason: FinishReason | None = None
        self.guide = guide  # constrained decoding: masks this sequence's logits
        self.thinking: ThinkingTracker | None = None
        if thinking is not None:

            def is_blank(token: int) -> bool:
                return not tokenizer.decode([token], skip_special_tokens=False).strip()

            self.thinking = ThinkingTracker(
                thinking,
                starts_in_reasoning=prompt_opens_thinking(self.prompt, thinking, is_blank),
                budget=request.params.max_reasoning_tokens,
                is_blank=is_blank,
            )


class Scheduler:
    """Owns the model thread. ``submit``/``abort``/``stats`` are safe from any thread."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        eos_token_ids: frozenset[int],
        config: SchedulerConfig | None = None,
        thinking: ThinkingTokens | None = None,
    ) -> None:
        self.runner = runner
        self.thinking = thinking  # the model's thinking tags; None: no reasoning accounting
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.config = config or SchedulerConfig()
        self.finish_listeners: list[FinishHook] = []  # called on the scheduler thread
        self.rejected = 0  # submits refused because the queue was full
        self.prefix_cache_hits = 0  # prompt tokens served from cached prefixes
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inbox: deque[Sequence_] = deque()
        self._aborts: deque[str] = deque()
        self._waiting: deque[Sequence_] = deque()  # owned by the thread
        self._running: dict[str, Sequence_] = {}  # owned by the thread; prefill + decode
        self._queued = 0  # inbox + waiting, under _lock
        self._running_count = 0
        self._kv_used = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # ---- any thread -------------------------------------------------------------------

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="r1serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(
        self,
        request: GenerationRequest,
        max_tokens: int,
        channel: Channel,
        guide: Guide | None = None,
    ) -> None:
        """Queue a request, or raise OverloadedError when the waiting queue is full."""
        seq = Sequence_(
            request,
            channel,
            self.tokenizer,
            self.runner.vocab_size,
            max_tokens,
            self.eos_token_ids,
            guide,
            self.thinking,
        )
        with self._lock:
            self._refuse_if_full(0)
            self._queued += 1
            self._inbox.append(seq)
        self._wake.set()

    def check_admission(self, pending: int = 0) -> None:
        """Raise OverloadedError when a request submitted after ``pending`` others would be."""
        with self._lock:
            self._refuse_if_full(pending)

    def _refuse_if_full(self, pending: int) -> None:
        slots = self.runner.kv.max_slots
        # Requests that will take a free slot at the next step are not "waiting".
        free = slots - self._running_count
        if self._queued + pending - free >= self.config.max_waiting:
            self.rejected += 1
            raise OverloadedError(
                f"server busy: {slots} requests running and {self.config.max_waiting} "
                "waiting (the limit); retry later",
                retry_after=self.config.retry_after_s,
            )

    def abort(self, request_id: str) -> None:
        """Cancel a request; it leaves before the next decode step."""
        self._aborts.append(request_id)
        self._wake.set()

    def stats(self) -> EngineStats:
        kv = self.runner.kv
        return EngineStats(
            running=self._running_count,
            waiting=self._queued,
            max_running=kv.max_slots,
            max_waiting=self.config.max_waiting,
            kv_tokens_used=self._kv_used,
            kv_tokens_total=kv.max_slots * kv.max_seq_len,
            rejected=self.rejected,
            prefix_cache_hits=self.prefix_cache_hits,
        )

    # ---- scheduler thread -------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stop:
                self._drain_inbox()
                if not self._running and not self._waiting:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                try:
                    self.step()
                except Exception as exc:  # a model failure must not kill the server
                    log.exception("engine step failed")
                    self._fail_all(exc)

    def _drain_inbox(self) -> None:
        while self._inbox:
            self._waiting.append(self._inbox.popleft())
        aborted = set()
        while self._aborts:
            aborted.add(self._aborts.popleft())
        if not aborted:
            return
        for seq in [s for s in self._waiting if s.request.request_id in aborted]:
            self._waiting.remove(seq)
            with self._lock:
                self._queued -= 1
            self._finish(seq, "abort", [])
        for rid in aborted & self._running.keys():
            self._finish(self._running[rid], "abort", [])

    def step(self) -> None:
        """One iteration: deadlines, admission, a prefill chunk, one decode step."""
        out: list[tuple[Channel, Delta]] = []
        self._expire(time.monotonic(), out)
        self._admit()
        self._prefill(out)
        self._decode(out)
        self.steps += 1
        self._deliver(out)

    def _expire(self, now: float, out: list[tuple[Channel, Delta]]) -> None:
        for seq in list(self._waiting):
            if seq.deadline is not None and now >= seq.deadline:
                self._waiting.remove(seq)
                with self._lock:
                    self._queued -= 1
                self._finish(seq, "timeout", out)
        for seq in list(self._running.values()):
            if seq.deadline is not None and now >= seq.deadline:
                self._finish(seq, "timeout", out)

    def _admit(self) -> None:
        free = self.runner.kv.max_slots - len(self._running)
        while free > 0 and self._waiting:
            seq = self._waiting.popleft()
            seq.slot = self.runner.acquire()
            seq.timings.admitted = time.monotonic()
            self._running[seq.request.request_id] = seq
            with self._lock:  # both counts move together, as submit() reads them
                self._queued -= 1
                self._running_count = len(self._running)
            free -= 1

    def _prefill(self, out: list[tuple[Channel, Delta]]) -> None:
        budget = self.config.max_prefill_tokens
        if not any(s.next_token is not None for s in self._running.values()):
            # Nobody is decoding, so no stream can stall: take a whole wave of arrivals in
            # one larger forward pass (more efficient, and every first token comes sooner).
            budget *= IDLE_PREFILL_FACTOR
        chunks: list[PrefillChunk] = []
        owners: list[Sequence_] = []
        for seq in self._running.values():
            if budget <= 0:
                break
            if seq.slot is None or seq.computed >= len(seq.prompt):
                continue
            if seq.computed == 0 and seq.next_token is None:
                cached = self.runner.reuse_prefix(seq.slot, seq.prompt)
                seq.computed = cached
                self._kv_used += cached
                self.prefix_cache_hits += cached
            remaining = len(seq.prompt) - seq.computed
            n = min(remaining, budget)
            chunks.append(
                PrefillChunk(seq.slot, seq.computed, seq.prompt[seq.computed : seq.computed + n])
            )
            owners.append(seq)
            budget -= n
        if not chunks:
            return
        logits = self.runner.prefill(chunks)  # [len(chunks), V]
        done_rows: list[int] = []
        for row, (seq, chunk) in enumerate(zip(owners, chunks, strict=True)):
            seq.computed += len(chunk.token_ids)
            self._kv_used += len(chunk.token_ids)
            if seq.computed == len(seq.prompt):
                done_rows.append(row)
        if done_rows:
            done = [owners[r] for r in done_rows]
            rows = self._masked(logits[done_rows], done)
            for seq, (tok, logprob) in zip(done, _choose(rows, done), strict=True):
                self._accept(seq, tok, out, logprob)

    def _decode(self, out: list[tuple[Channel, Delta]]) -> None:
        batch = [s for s in self._running.values() if s.next_token is not None]
        if not batch:
            return
        inputs = [DecodeInput(s.slot, s.next_token, s.computed) for s in batch]  # type: ignore[arg-type]
        logits = self.runner.decode(inputs)  # [B, V]
        self._kv_used += len(batch)
        for s in batch:
            s.computed += 1
        for seq, (tok, logprob) in zip(
            batch, _choose(self._masked(logits, batch), batch), strict=True
        ):
            if seq.finish_reason is None:
                self._accept(seq, tok, out, logprob)

    def _masked(self, logits: torch.Tensor, seqs: Sequence[Sequence_]) -> torch.Tensor:
        """Logits [B, V] with what each guided sequence's constraint forbids masked out."""
        if not any(s.guide is not None for s in seqs):
            return logits
        return mask_logits(logits, [s.guide for s in seqs], self.eos_token_ids)

    def _accept(
        self,
        seq: Sequence_,
        token: int,
        out: list[tuple[Channel, Delta]],
        logprob: TokenLogprob | None = None,
    ) -> None:
        """Record a chosen token: emit its text, or finish the sequence."""
        now = time.monotonic()
        if seq.timings.first_token is None:
            seq.timings.first_token = now
        seq.output.append(token)
        seq.unsent_ids.append(token)
        if logprob is not None:
            seq.unsent_logprobs.append(logprob)
        seq.sampler.observe(token)
        params = seq.request.params
        if (
            token in self.eos_token_ids and not params.ignore_eos
        ) or token in params.stop_token_ids:
            self._finish(seq, "stop", out, stop_reason=token)
            return
        text = seq.detok.feed([token])
        if seq.guide is not None:
            seq.guide.accept(token, text)
        if seq.stops is not None and text:
            result = seq.stops.feed(text)
            text = result.text
            if result.stopped:
                self._emit(seq, text, out)
                self._finish(seq, "stop", out, stop_reason=result.matched, flush=False)
                return
        if len(seq.output) >= seq.max_tokens or seq.computed + 1 >= self.runner.kv.max_seq_len:
            self._emit(seq, text, out)
            self._finish(seq, "length", out)
            return
        seq.next_token = token
        self._emit(seq, text, out)

    def _emit(self, seq: Sequence_, text: str, out: list[tuple[Channel, Delta]]) -> None:
        if text or seq.unsent_ids:
            delta = Delta(
                text=text,
                token_ids=tuple(seq.unsent_ids),
                logprobs=tuple(seq.unsent_logprobs),
            )
            out.append((seq.channel, delta))
            seq.unsent_ids = []
            seq.unsent_logprobs = []

    def _finish(
        self,
        seq: Sequence_,
        reason: FinishReason,
        out: list[tuple[Channel, Delta]],
        *,
        stop_reason: str | int | None = None,
        flush: bool = True,
    ) -> None:
        seq.finish_reason = reason
        seq.next_token = None
        seq.timings.finished = time.monotonic()
        text = ""
        if flush and reason in ("stop", "length", "timeout"):
            text = seq.detok.flush()
            if seq.stops is not None:
                result = seq.stops.feed(text)
                text = result.text + ("" if result.stopped else seq.stops.flush())
        usage = Usage(
            prompt_tokens=len(seq.prompt),
            completion_tokens=len(seq.output),
            reasoning_tokens=seq.thinking.reasoning_tokens if seq.thinking else 0,
        )
        delta = Delta(
            text=text,
            token_ids=tuple(seq.unsent_ids),
            finish_reason=reason,
            stop_reason=stop_reason,
            usage=usage,
            logprobs=tuple(seq.unsent_logprobs),
        )
        seq.unsent_ids = []
        seq.unsent_logprobs = []
        if seq.request.request_id in self._running:
            del self._running[seq.request.request_id]
            with self._lock:
                self._running_count = len(self._running)
            self._kv_used -= seq.computed
            if seq.slot is not None:
                self.runner.release(seq.slot)
                seq.slot = None
        if reason == "abort":
            # Nobody is listening; deliver anyway so a late reader never hangs.
            self._deliver([(seq.channel, delta)])
        else:
            out.append((seq.channel, delta))
        if self.finish_listeners:
            record = FinishedRequest(
                seq.request.request_id, reason, len(seq.prompt), len(seq.output), seq.timings
            )
            for listener in self.finish_listeners:
                try:
                    listener(record)
                except Exception:  # a broken listener must not break generation
                    log.exception("finish listener failed")

    def _fail_all(self, exc: Exception) -> None:
        out: list[tuple[Channel, Delta]] = []
        for seq in list(self._running.values()):
            self._finish(seq, "error", out, stop_reason=type(exc).__name__)
        self._deliver(out)

    @staticmethod
    def _deliver(out: Sequence[tuple[Channel, Delta]]) -> None:
        if not out:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Channel, Delta]]] = {}
        for channel, delta in out:
            by_loop.setdefault(channel.loop, []).append((channel, delta))
        for loop, items in by_loop.items():
            # A closed loop (shutdown) has nobody left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_put_all, items)


def _choose(
    logits: torch.Tensor, seqs: Sequence[Sequence_]
) -> list[tuple[int, TokenLogprob | None]]:
    """Each row's next token ([B, V] logits): sampled, or forced by a thinking budget; with
    its log probability where the request asked for them."""
    samplers = [s.sampler for s in seqs]
    wants = [row for row, s in enumerate(seqs) if s.request.params.logprobs is not None]
    adjusted = None
    if wants:
        # Before sampling, which may overwrite its working copy of the logits.
        adjusted = adjust_logits(logits[wants].float(), [samplers[row] for row in wants])
    tokens: list[int] = sample(logits, samplers).tolist()
    for row, seq in enumerate(seqs):
        forced = seq.thinking.take_forced() if seq.thinking is not None else None
        if forced is not None:
            tokens[row] = forced
            seq.thinking.observe(forced, forced=True)  # type: ignore[union-attr]
        elif seq.thinking is not None:
            seq.thinking.observe(tokens[row])
    logprobs: list[TokenLogprob | None] = [None] * len(seqs)
    if adjusted is not None:
        top = [seqs[row].request.params.logprobs or 0 for row in wants]
        chosen = token_logprobs(adjusted, [tokens[r] for r in wants], top)
        for row, value in zip(wants, chosen, strict=True):
            logprobs[row] = value
    return list(zip(tokens, logprobs, strict=True))


def _put_all(items: list[tuple[Channel, Delta]]) -> None:
    for channel, delta in items:
        channel.queue.put_nowait(delta)
