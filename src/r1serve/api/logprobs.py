"""Token log probabilities in OpenAI's wire shapes: chat's ``content`` list, completions' legacy
``tokens``/``token_logprobs``/``top_logprobs``/``text_offset``.

A token's string is its own decoding (special tokens spelled out); a token that is part of a
multi-byte character decodes to U+FFFD, and ``bytes`` are then the UTF-8 of that, not the raw
byte (the engines expose no per-token bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from r1serve.engine.protocol import Tokenizer, TokenLogprob


class TokenText:
    """Token id -> its string, cached (the same few thousand tokens come up again and again)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id], skip_special_tokens=False)
            if len(self._cache) < 65536:
                self._cache[token_id] = text
        return text


def _entry(text: TokenText, token_id: int, logprob: float) -> dict[str, Any]:
    token = text(token_id)
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def chat_logprob_content(items: Iterable[TokenLogprob], text: TokenText) -> list[dict[str, Any]]:
    """The ``logprobs.content`` entries of a chat choice or chunk."""
    return [
        {
            **_entry(text, item.token_id, item.logprob),
            "top_logprobs": [_entry(text, tid, lp) for tid, lp in item.top],
        }
        for item in items
    ]


def chat_logprobs(items: Iterable[TokenLogprob], text: TokenText) -> dict[str, Any]:
    return {"content": chat_logprob_content(items, text), "refusal": None}


def completion_logprobs(
    items: Iterable[TokenLogprob], text: TokenText, offset: int = 0
) -> dict[str, Any]:
    """The legacy ``logprobs`` object of a text completion; offsets start at ``offset``."""
    tokens: list[str] = []
    values: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    for item in items:
        token = text(item.token_id)
        offsets.append(offset)
        offset += len(token)
        tokens.append(token)
        values.append(item.logprob)
        tops.append({text(tid): lp for tid, lp in item.top})
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
