"""Token ids that llama.cpp's stream holds back inside a UTF-8 character, recovered.

llama.cpp's server sends no chunk for a sampled token after which its text ends in the middle
of a UTF-8 character: a vocabulary without a token for "▁" (U+2581, three bytes) spells it with a
two-byte token and a one-byte token, and only the second gets a chunk. That chunk's text carries
the bytes of both, but its token id (and log probability) is the second one's alone. r1serve
works on token ids (its own detokenizer, the prompt of the next leg, the token counts), so the
held-back ids must come back: each chunk says how many tokens the sequence has sampled
(``timings.predicted_n``, with ``timings_per_token``), the gap says how many were held back, and
the chunk's bytes without those of its own tokens are what they spell. ``TokenPieces.spell``
finds ids that spell exactly those bytes in exactly that many tokens. Their log probabilities
are lost (llama.cpp never sends them).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

# llama.cpp token types (gguf.TokenType), as in r1serve.engine.text.gguf_tokenizer
_NORMAL, _USER_DEFINED, _BYTE = 1, 4, 6
# Held-back text longer than this is not a split character: nothing is recovered.
_MAX_HELD_BYTES = 64


@functools.cache
def _gpt2_byte_of() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _byte_level_piece(text: str) -> bytes | None:
    table = _gpt2_byte_of()
    try:
        return bytes(table[ch] for ch in text)
    except KeyError:  # not a byte-level token
        return None


def _sentencepiece_piece(text: str, token_type: int) -> bytes | None:
    if token_type == _BYTE:
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            return bytes([int(text[3:5], 16)])
        return None
    return text.replace("\u2581", " ").encode()


class TokenPieces:
    """The bytes llama.cpp gives each ordinary token of a GGUF vocabulary, both ways round.

    Built from the GGUF's ``tokenizer.ggml.*`` metadata by the rules of llama.cpp's
    ``token_to_piece``: byte-level BPE (``gpt2``) maps GPT-2's alphabet back to bytes,
    SentencePiece (``llama``) turns "▁" into a space and ``<0xNN>`` byte tokens into that byte.
    Control tokens spell nothing and are never recovered. The tables are made on first use.
    """

    def __init__(self, kind: str, tokens: Sequence[str], token_types: Sequence[int]) -> None:
        self._kind = kind
        self._tokens = tokens
        self._types = token_types
        self._lock = threading.Lock()
        self._by_bytes: dict[bytes, int] | None = None
        self._longest = 0

    @classmethod
    def from_gguf(cls, meta: dict[str, Any]) -> TokenPieces | None:
        """The vocabulary's pieces, or None for a tokenizer model these rules do not cover."""
        kind = meta.get("tokenizer.ggml.model")
        tokens = meta.get("tokenizer.ggml.tokens")
        if kind not in ("gpt2", "llama") or not tokens:
            return None
        types = meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
        return cls(str(kind), list(tokens), [int(t) for t in types])

    def _piece(self, token_id: int) -> bytes | None:
        if not 0 <= token_id < len(self._tokens):
            return None
        text, token_type = self._tokens[token_id], self._types[token_id]
        if token_type == _USER_DEFINED:
            return text.encode()
        if token_type not in (_NORMAL, _BYTE):
            return None
        if self._kind == "gpt2":
            return _byte_level_piece(text)
        return _sentencepiece_piece(text, token_type)

    def _table(self) -> dict[bytes, int]:
        with self._lock:
            if self._by_bytes is None:
                table: dict[bytes, int] = {}
                for token_id in range(len(self._tokens)):
                    piece = self._piece(token_id)
                    if piece:
                        table.setdefault(piece, token_id)
                self._longest = max(map(len, table), default=0)
                self._by_bytes = table
            return self._by_bytes

    def piece(self, token_id: int) -> bytes | None:
        """The bytes of one token (None for a control token or an id out of range)."""
        return self._piece(token_id)

    def spell(self, data: bytes, count: int) -> list[int] | None:
        """``count`` token ids whose pieces join to ``data`` (longest pieces first), or None."""
        if count <= 0 or not 0 < len(data) <= _MAX_HELD_BYTES:
            return None
        table = self._table()
        longest = self._longest

        @functools.cache
        def split(start: int, left: int) -> tuple[int, ...] | None:
            rest = len(data) - start
            if left == 0:
                return () if rest == 0 else None
            if rest < left:
                return None
            for size in range(min(longest, rest - left + 1), 0, -1):
                token = table.get(data[start : start + size])
                if token is None:
                    continue
                tail = split(start + size, left - 1)
                if tail is not None:
                    return (token, *tail)
            return None

        found = split(0, count)
        return None if found is None else list(found)

    def held_back(
        self, chunk_bytes: bytes, chunk_ids: Sequence[int], count: int
    ) -> list[int] | None:
        """The ``count`` ids held back before a chunk's own tokens, from the chunk's bytes."""
        own = b""
        for token_id in chunk_ids:
            piece = self._piece(token_id)
            own += piece or b""
        if not chunk_bytes.endswith(own):
            return None
        return self.spell(chunk_bytes[: len(chunk_bytes) - len(own)], count)
