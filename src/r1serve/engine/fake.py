"""A scripted stand-in for a model, run through the real scheduler and routes.

``FakeRunner`` returns logits that make whatever sampler is in use pick the next token of a
scripted reply (given text, given chunking, given delay per step). ``FakeTokenizer`` is a byte
tokenizer plus a few control tokens and one token per scripted chunk, so chunking (even inside
a multi-byte character) is exact. ``fake_engine`` wires them into a ``LocalEngine``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from r1serve.engine.grammar import ConstraintCompiler
from r1serve.engine.protocol import Constraint, FinishReason, GenerationRequest
from r1serve.engine.text.chat_template import ChatFormatter
from r1serve.engine.transformers.engine import LocalEngine, RequestStream
from r1serve.engine.transformers.runner import DecodeInput, KVLayout, PrefillChunk
from r1serve.engine.transformers.scheduler import FinishedRequest, SchedulerConfig

EOS = "<|end|>"
CONTROL = {EOS: 256, "<|im_start|>": 257, "<|im_end|>": 258}
ADDED = {"<think>": 259, "</think>": 260}
FIRST_CHUNK_ID = 261
VOCAB_SIZE = 8192

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
THINK_TEMPLATE = CHATML_TEMPLATE.replace(
    "assistant\n{% endif %}", "assistant\n<think>\n{% endif %}"
)
_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in [*CONTROL, *ADDED]) + ")")
_WORDS = re.compile(r"<think>|</think>|\s*[^\s<]+|\s+|<")


class FakeTokenizer:
    """Bytes 0-255, control tokens, ``<think>`` tags, then one id per scripted chunk."""

    def __init__(self) -> None:
        self._chunks: dict[bytes, int] = {}
        self._pieces: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for text, tid in {**CONTROL, **ADDED}.items():
            self._pieces[tid] = text.encode()
        self._lock = threading.Lock()

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({CONTROL[EOS]})

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def chunk_id(self, piece: bytes) -> int:
        """The token id of one scripted chunk (made on first use)."""
        if len(piece) == 1:
            return piece[0]
        known = {**CONTROL, **ADDED}.get(piece.decode("utf-8", errors="replace"))
        if known is not None:
            return known
        with self._lock:
            if piece not in self._chunks:
                tid = FIRST_CHUNK_ID + len(self._chunks)
                if tid >= VOCAB_SIZE:
                    raise ValueError("fake tokenizer: too many distinct chunks")
                self._chunks[piece] = tid
                self._pieces[tid] = piece
            return self._chunks[piece]

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        for part in _SPLIT.split(text):
            if part in CONTROL:
                ids.append(CONTROL[part])
            elif part in ADDED:
                ids.append(ADDED[part])
            else:
                ids.extend(part.encode())
        return ids

    def encode_plain(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        skip = set(CONTROL.values()) if skip_special_tokens else set()
        data = b"".join(self._pieces.get(i, b"") for i in ids if i not in skip)
        return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class FakeReply:
    """A scripted reply: ``chunks`` (str or bytes) are emitted one token each."""

    text: str = ""
    chunks: Sequence[str | bytes] | None = None
    delay_s: float = 0.0  # sleep per decode step while this reply runs
    eos: bool = True  # end with EOS; otherwise keep going (max_tokens/deadline end it)
    repeat: bool = False  # start over after the last chunk instead of ending

    def pieces(self) -> list[bytes]:
        if self.chunks is not None:
            return [c if isinstance(c, bytes) else c.encode() for c in self.chunks]
        return [m.group(0).encode() for m in _WORDS.finditer(self.text)]


ReplySource = Callable[[str], FakeReply]


@dataclass
class _Slot:
    prompt: list[int] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    index: int = 0
    reply: FakeReply = field(default_factory=FakeReply)


class FakeRunner:
    """A ModelRunner whose "model" replays scripts; records what it was asked to do."""

    def __init__(
        self,
        tokenizer: FakeTokenizer,
        replies: Replies,
        *,
        max_slots: int = 8,
        max_seq_len: int = 4096,
    ) -> None:
        self._tok = tokenizer
        self._replies, self._by_prompt = reply_source(replies)
        self._kv = KVLayout(max_slots, max_seq_len, 64, "fake runner: fixed slots")
        self._free = list(range(max_slots - 1, -1, -1))
        self._slots: dict[int, _Slot] = {}
        self.decode_batches: list[int] = []  # batch size of every decode step
        self.prefill_tokens: list[int] = []  # tokens of every prefill call
        self.max_active = 0

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def kv(self) -> KVLayout:
        return self._kv

    @property
    def active(self) -> int:
        return len(self._slots)

    def acquire(self) -> int:
        slot = self._free.pop()
        self._slots[slot] = _Slot()
        self.max_active = max(self.max_active, len(self._slots))
        return slot

    def reuse_prefix(self, slot: int, prompt: Sequence[int]) -> int:
        return 0  # no prefix cache

    def release(self, slot: int) -> None:
        del self._slots[slot]
        self._free.append(slot)

    def _logits(self, rows: list[int]) -> torch.Tensor:
        logits = torch.zeros(len(rows), VOCAB_SIZE)  # [B, V]
        logits[torch.arange(len(rows)), torch.tensor(rows)] = 1e4
        return logits

    def _next(self, state: _Slot) -> int:
        if state.index >= len(state.script):
            if state.reply.repeat and state.script:
                state.index = 0
            else:
                return CONTROL[EOS] if state.reply.eos else ord(" ")
        token = state.script[state.index]
        state.index += 1
        return token

    def prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        rows = []
        for chunk in chunks:
            state = self._slots[chunk.slot]
            state.prompt.extend(chunk.token_ids)
            if self._by_prompt or chunk.start == 0:
                text = self._tok.decode(state.prompt, skip_special_tokens=False)
                state.reply = self._replies(text)
                state.script = [self._tok.chunk_id(p) for p in state.reply.pieces()]
                if state.reply.eos:
                    state.script.append(CONTROL[EOS])
            state.index = 0
            rows.append(self._next(state))
            self.prefill_tokens.append(len(chunk.token_ids))
        return self._logits(rows)

    def decode(self, inputs: Sequence[DecodeInput]) -> torch.Tensor:
        states = [self._slots[i.slot] for i in inputs]
        delay = max((s.reply.delay_s for s in states), default=0.0)
        if delay:
            time.sleep(delay)
        self.decode_batches.append(len(inputs))
        return self._logits([self._next(s) for s in states])


Replies = str | FakeReply | Sequence[str | FakeReply] | ReplySource


class _InOrder:
    """Replies handed out one per request in admission order; the last one repeats."""

    def __init__(self, replies: Sequence[str | FakeReply]) -> None:
        self._queue = [r if isinstance(r, FakeReply) else FakeReply(r) for r in replies]
        if not self._queue:
            raise ValueError("no fake replies given")

    def __call__(self, prompt: str) -> FakeReply:
        return self._queue.pop(0) if len(self._queue) > 1 else self._queue[0]


def reply_source(replies: Replies) -> tuple[ReplySource, bool]:
    """A chooser, and whether it looks at the prompt (then it is asked after every chunk)."""
    if isinstance(replies, str | FakeReply):
        return _InOrder([replies]), False
    if callable(replies):
        return replies, True
    return _InOrder(list(replies)), False


class FakeEngine(LocalEngine):
    """A LocalEngine on a FakeRunner; ``finished`` maps request id to finish reason.

    Constraints are compiled (a bad schema is refused as on a real engine) and recorded in
    ``constraints_seen``, but nothing masks the output: the script is the model.
    """

    def __init__(
        self,
        replies: Replies = "Hello!",
        *,
        model_name: str = "fake-model",
        max_slots: int = 8,
        max_seq_len: int = 4096,
        context_length: int = 4096,
        think_template: bool = False,
        scheduler_config: SchedulerConfig | None = None,
        default_sampling: Mapping[str, Any] | None = None,
        constraint_timeout_s: float = 10.0,
        chat_template: str | None = None,
    ) -> None:
        tok = FakeTokenizer()
        self.fake_runner = FakeRunner(tok, replies, max_slots=max_slots, max_seq_len=max_seq_len)
        template = chat_template or (THINK_TEMPLATE if think_template else CHATML_TEMPLATE)
        self.finished: dict[str, FinishReason] = {}
        self.constraints_seen: list[Constraint] = []
        super().__init__(
            runner=self.fake_runner,
            tokenizer=tok,
            chat=ChatFormatter(template, tok, bos_token=None, eos_token=EOS),
            model_name=model_name,
            context_length=context_length,
            eos_token_ids=tok.eos_token_ids,
            scheduler_config=scheduler_config,
            default_sampling=default_sampling,
            constraints=ConstraintCompiler(None, timeout_s=constraint_timeout_s),
            kind="fake",
        )
        self.add_finish_listener(self._record)

    async def submit(self, request: GenerationRequest) -> RequestStream:
        if request.params.constraint is not None:
            self.constraints_seen.append(request.params.constraint)
        return await super().submit(request)

    def _record(self, done: FinishedRequest) -> None:
        self.finished[done.request_id] = done.reason
