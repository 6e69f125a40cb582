"""Constrained decoding with llguidance: grammars from Constraints, compiled off the model thread.

``grammar_of`` turns a Constraint into llguidance's grammar text (pure; RequestError for input
that is not a schema at all). ``ConstraintCompiler`` checks and compiles it against the model's
tokenizer in a worker thread with a time limit, so a pathological schema is a 400 after at
most ``timeout_s`` and never holds up the scheduler or the event loop. The result is a ``Guide``:
one sequence's matcher, which the scheduler asks for a token mask each step and advances with
each accepted token (``r1serve.engine.transformers.guided`` applies the masks to a batch).

JSON is generated compactly (no free whitespace between tokens): with free whitespace a small
model at temperature 1 can pad an object with newlines until it runs out of tokens.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import llguidance

from r1serve.engine.protocol import Constraint, Tokenizer
from r1serve.engine.text.tool_format import MARKERS
from r1serve.errors import RequestError

if TYPE_CHECKING:
    from r1serve.engine.text.tokenizer import HFTokenizer

DEFAULT_TIMEOUT_S = 10.0
# Leading whitespace allowed before a JSON answer that follows ``after`` (R1 writes "\n\n").
_LEADING_SPACE = r"/[ \t\n]{0,4}/"
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Bounds on grammar size and lexer work, so most pathological inputs fail fast (and the time
# limit catches the rest).
_LIMITS: dict[str, Any] = {
    "max_grammar_size": 200_000,
    "initial_lexer_fuel": 2_000_000,
    "max_lexer_states": 50_000,
}
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="r1serve-grammar")


def grammar_of(constraint: Constraint, tokenizer: llguidance.LLTokenizer | None = None) -> str:
    """llguidance grammar text for a constraint; RequestError when the source is malformed.

    With a tokenizer, a Lark literal that is one of its special tokens (``<tool_call>`` is one
    in Qwen vocabularies) also matches that token: models write it as one token, which a text
    literal would forbid.
    """
    if constraint.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(constraint.source)
    source = lark_of(constraint)
    if constraint.kind == "lark" and tokenizer is not None:
        source = _special_markers(source, tokenizer)
    return llguidance.LLMatcher.grammar_from_lark(source)


def lark_of(constraint: Constraint) -> str:
    """The constraint as Lark text in llguidance's dialect (what llama.cpp's llguidance takes)."""
    if constraint.kind in ("json_schema", "json_object"):
        schema = _schema(constraint)
        body = "%json " + json.dumps(schema, ensure_ascii=False)
        lead = f"{_LEADING_SPACE} " if constraint.after is not None else ""
        return f"start: {lead}{body}\n"
    if constraint.kind == "lark":
        return constraint.source
    if constraint.kind == "regex":
        return "start: /" + constraint.source.replace("/", "\\/") + "/\n"
    raise RequestError(f"unknown constraint kind {constraint.kind!r}", param="response_format")


def llamacpp_grammar(constraint: Constraint, tokenizer: Tokenizer | None = None) -> str:
    """The ``grammar`` of a llama.cpp request: its llguidance build reads this header.

    As in ``grammar_of``, a tool-call marker that the tokenizer makes one control token also
    matches that token (``<[id]>``): llguidance in llama.cpp spells control tokens apart.
    """
    source = lark_of(constraint)
    if constraint.kind == "lark" and tokenizer is not None:
        for marker in MARKERS:
            ids = tokenizer.encode(marker)
            if len(ids) == 1 and tokenizer.encode_plain(marker) != ids:
                literal = json.dumps(marker, ensure_ascii=False)
                source = source.replace(literal, f"({literal} | <[{ids[0]}]>)")
    return "%llguidance {}\n" + source


def forced_tokens_grammar(token_ids: tuple[int, ...]) -> str:
    """A llama.cpp grammar whose one sentence is exactly these tokens (a forced text)."""
    return "%llguidance {}\nstart: " + " ".join(f"<[{t}]>" for t in token_ids) + "\n"


def _schema(constraint: Constraint) -> dict[str, object]:
    schema: Any = {"type": "object"}
    if constraint.kind == "json_schema":
        try:
            schema = json.loads(constraint.source)
        except json.JSONDecodeError as exc:
            raise RequestError(
                f"the JSON schema is not JSON: {exc}", param="response_format"
            ) from None
        if isinstance(schema, bool):
            schema = {} if schema else {"not": {}}
        if not isinstance(schema, dict):
            raise RequestError("a JSON schema must be an object", param="response_format")
    style = dict(_JSON_STYLE)
    given = schema.get("x-guidance")
    if isinstance(given, dict):
        style.update(given)
    return {**schema, "x-guidance": style}


def _special_markers(source: str, tokenizer: llguidance.LLTokenizer) -> str:
    for marker in MARKERS:
        ids = tokenizer.tokenize_str(marker, parse_special=True)
        if len(ids) == 1 and tokenizer.is_special_token(ids[0]):
            literal = json.dumps(marker, ensure_ascii=False)
            source = source.replace(literal, f"({literal} | <[{ids[0]}]>)")
    return source


def _limits() -> llguidance.LLParserLimits:
    return llguidance.LLParserLimits(**_LIMITS, verbose_errors=False)


def check_grammar(grammar: str) -> None:
    """RequestError saying why, if llguidance cannot compile the grammar (no tokenizer needed)."""
    error = llguidance.LLMatcher.validate_grammar(grammar, None, limits=_limits())
    if error:
        raise RequestError(f"the constraint cannot be compiled: {error}", param="response_format")


class Guide:
    """One sequence's matcher: masks the next token and follows the accepted ones.

    With ``after``, it stays inactive (no mask) until the output contains that text; the
    matcher starts with the next token.
    """

    __slots__ = ("_seen", "active", "after", "matcher")

    def __init__(self, matcher: llguidance.LLMatcher, after: str | None) -> None:
        self.matcher = matcher
        self.after = after
        self.active = after is None
        self._seen = ""

    def accept(self, token: int, text: str) -> None:
        """Record an accepted token (``text``: what it added to the output)."""
        if self.active:
            self.matcher.consume_token(token)
            return
        assert self.after is not None
        self._seen = (self._seen + text)[-(len(self.after) + len(text)) :]
        if self.after in self._seen:
            self.active = True


class ConstraintCompiler:
    """Compiles constraints for one tokenizer, in worker threads, within a time limit.

    ``tokenizer`` builds the llguidance tokenizer (slow: seconds for a 150k vocabulary), once,
    on first use or ``warm()``. Without one (the fake engine), constraints are only checked and
    ``guide`` returns None: nothing masks the output.
    """

    def __init__(
        self,
        tokenizer: Callable[[], llguidance.LLTokenizer] | None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._make_tokenizer = tokenizer
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()
        self.timeout_s = timeout_s

    def warm(self) -> None:
        """Start building the llguidance tokenizer in the background."""
        if self._make_tokenizer is not None:
            _POOL.submit(self._lltokenizer)

    def _lltokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                assert self._make_tokenizer is not None
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer

    async def guide(self, constraint: Constraint) -> Guide | None:
        """A fresh Guide for one sequence, or RequestError (bad or too slow to compile)."""
        if self._make_tokenizer is not None:
            # The tokenizer is built once per engine; its time does not count against a request.
            await asyncio.wrap_future(_POOL.submit(self._lltokenizer))
        future = _POOL.submit(self._compile, constraint)
        try:
            matcher = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            raise RequestError(
                f"the constraint took longer than {self.timeout_s:g} s to compile; "
                "simplify the schema",
                param="response_format",
            ) from None
        return None if matcher is None else Guide(matcher, constraint.after)

    def _compile(self, constraint: Constraint) -> llguidance.LLMatcher | None:
        grammar = grammar_of(constraint, self._tokenizer)
        check_grammar(grammar)
        if self._tokenizer is None:
            return None
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0, limits=_limits())
        if matcher.is_error():
            raise RequestError(
                f"the constraint cannot be compiled: {matcher.get_error()}",
                param="response_format",
            )
        return matcher


def hf_lltokenizer(tokenizer: HFTokenizer, vocab_size: int) -> Callable[[], llguidance.LLTokenizer]:
    """A builder of the llguidance tokenizer for an HFTokenizer; ``vocab_size``: logits' width."""

    def build() -> llguidance.LLTokenizer:
        return llguidance.LLTokenizer(
            tokenizer.backend.to_str(),
            n_vocab=vocab_size,
            eos_token=sorted(tokenizer.eos_token_ids),
        )

    return build
