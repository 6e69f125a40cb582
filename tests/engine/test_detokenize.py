"""IncrementalDetokenizer with the tiny R1 (byte-level BPE) tokenizer and a SentencePiece-style
Unigram tokenizer with byte fallback, built here offline with the ``tokenizers`` library."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

from r1serve.engine.text.detokenize import IncrementalDetokenizer, TextDecoder
from support.models import TINY_R1_HF, TINY_RAW

REPLACEMENT = "\ufffd"
TINY_REPLY_IDS = [151648, 198, 32313, 11, 279, 1196, 2727, 23811, 13, 358, 1265, 40786, 1105]
TINY_REPLY_IDS += [1182, 624, 151649, 271, 9707, 0, 2585, 646, 358, 1492, 498, 3351, 30, 151643]
EOS = 151643
MIXED = "Hello 世界! مرحبا नमस्ते 👨‍👩‍👧‍👦 🇺🇸 café ñ 日本語のテキスト 🙂\n\tend"


@pytest.fixture(scope="module")
def qwen() -> Any:
    return transformers.AutoTokenizer.from_pretrained(TINY_R1_HF)


def build_sentencepiece_like() -> Tokenizer:
    """A Llama-2 style tokenizer: Unigram, ``▁`` for spaces, ``<0xNN>`` byte fallback."""
    pieces = ["▁", "▁the", "▁hello", "▁world", "he", "llo", "wor", "ld", "▁a", "é", ".", "!"]
    pieces += list("abcdehlorstw")
    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
    vocab += [(f"<0x{byte:02X}>", 0.0) for byte in range(256)]
    vocab += [(piece, -float(rank + 2)) for rank, piece in enumerate(pieces)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tokenizer.add_special_tokens(
        [AddedToken("<s>", special=True), AddedToken("</s>", special=True)]
    )
    return tokenizer


SENTENCEPIECE = build_sentencepiece_like()


class CountingDecoder:
    """Wraps a tokenizer and records the length of every window it is asked to decode."""

    def __init__(self, inner: TextDecoder) -> None:
        self.inner = inner
        self.window_lengths: list[int] = []

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        self.window_lengths.append(len(ids))
        return self.inner.decode(list(ids), skip_special_tokens=skip_special_tokens)


def stream(
    tokenizer: TextDecoder, ids: list[int], group_sizes: Sequence[int] = (1,), **kwargs: Any
) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer, **kwargs)
    chunks, position, turn = [], 0, 0
    while position < len(ids):
        size = group_sizes[turn % len(group_sizes)]
        chunks.append(detokenizer.feed(ids[position : position + size]))
        position, turn = position + size, turn + 1
    chunks.append(detokenizer.flush())
    return chunks


def encode_qwen(qwen: Any, text: str) -> list[int]:
    return list(qwen.encode(text, add_special_tokens=False))


def encode_sp(text: str) -> list[int]:
    return list(SENTENCEPIECE.encode(text).ids)


def assert_streams_like_full_decode(tokenizer: TextDecoder, ids: list[int], chunks: list[str]):
    full = tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(chunks) == full
    if REPLACEMENT not in full:
        assert not any(REPLACEMENT in chunk for chunk in chunks), chunks


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40), groups=st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_qwen_random_unicode_any_grouping(qwen: Any, text: str, groups: list[int]) -> None:
    ids = encode_qwen(qwen, text)
    assert_streams_like_full_decode(qwen, ids, stream(qwen, ids))
    assert_streams_like_full_decode(qwen, ids, stream(qwen, ids, groups))


@settings(max_examples=150)
@given(text=st.text(max_size=40), groups=st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_sentencepiece_random_unicode_any_grouping(text: str, groups: list[int]) -> None:
    ids = encode_sp(text)
    assert_streams_like_full_decode(SENTENCEPIECE, ids, stream(SENTENCEPIECE, ids))
    assert_streams_like_full_decode(SENTENCEPIECE, ids, stream(SENTENCEPIECE, ids, groups))


@pytest.mark.parametrize(
    "text",
    ["中文字符，你好世界。", "👨‍👩‍👧‍👦👩🏽‍💻🏳️‍🌈", "🇺🇸🇯🇵", MIXED, "e\u0301 a\u0308 ｆｕｌｌ"],
)
def test_multibyte_text_never_split(qwen: Any, text: str) -> None:
    for tokenizer, ids in ((qwen, encode_qwen(qwen, text)), (SENTENCEPIECE, encode_sp(text))):
        chunks = stream(tokenizer, ids)
        assert_streams_like_full_decode(tokenizer, ids, chunks)
        # Qwen's tokenizer normalizes to NFC; the SentencePiece-style one only maps spaces.
        assert "".join(chunks) in (text, unicodedata.normalize("NFC", text))


def test_sentencepiece_really_splits_characters_over_byte_tokens() -> None:
    ids = encode_sp("中")
    assert [SENTENCEPIECE.id_to_token(i) for i in ids] == ["▁", "<0xE4>", "<0xB8>", "<0xAD>"]
    detokenizer = IncrementalDetokenizer(SENTENCEPIECE)
    assert [detokenizer.feed([i]) for i in ids] == ["", "", "", "中"]


def test_emoji_zwj_sequence_arrives_whole_characters(qwen: Any) -> None:
    text = "👨‍👩‍👧"
    chunks = stream(qwen, encode_qwen(qwen, text))
    assert "".join(chunks) == text
    assert all(chunk in ("", "👨", "👩", "👧", "\u200d") for chunk in chunks)


def test_tiny_model_reply_streams_exactly(qwen: Any) -> None:
    chunks = stream(qwen, TINY_REPLY_IDS)
    assert "".join(chunks) == TINY_RAW
    assert chunks[0] == "<think>" and chunks[-2:] == ["", ""]  # EOS skipped, nothing held


def test_special_tokens_kept_when_asked(qwen: Any) -> None:
    chunks = stream(qwen, TINY_REPLY_IDS, skip_special_tokens=False)
    assert "".join(chunks) == TINY_RAW + "<｜end▁of▁sentence｜>"


def test_sentencepiece_leading_space_uses_prompt_context() -> None:
    prompt, output = encode_sp("say"), encode_sp("hello world")
    assert SENTENCEPIECE.decode(output) == "hello world"  # the first token alone loses its space
    chunks = stream(SENTENCEPIECE, output, prompt_token_ids=prompt)
    assert chunks[:2] == [" hello", " world"]
    full = SENTENCEPIECE.decode(prompt + output)
    assert "".join(chunks) == full[len(SENTENCEPIECE.decode(prompt)) :]


def test_prompt_ending_inside_byte_run_does_not_corrupt_output() -> None:
    prompt, output = encode_sp("x 中文"), encode_sp("字符")[1:]  # output continues the byte run
    assert SENTENCEPIECE.id_to_token(output[0]) == "<0xE5>"
    chunks = stream(SENTENCEPIECE, output, prompt_token_ids=prompt)
    assert "".join(chunks) == "字符"


def test_qwen_prompt_context(qwen: Any) -> None:
    prompt = [151646, 151644, 6023, 151645]
    chunks = stream(qwen, TINY_REPLY_IDS, prompt_token_ids=prompt)
    assert "".join(chunks) == TINY_RAW


@pytest.mark.parametrize("tokenizer_name", ["qwen", "sentencepiece"])
def test_invalid_bytes_come_out_as_replacement_chars(qwen: Any, tokenizer_name: str) -> None:
    if tokenizer_name == "qwen":
        tokenizer: TextDecoder = qwen
        lone_byte = qwen.convert_tokens_to_ids("ä")  # byte-level symbol for the byte 0xE4
        letter = encode_qwen(qwen, "a")[0]
    else:
        tokenizer = SENTENCEPIECE
        lone_byte, letter = SENTENCEPIECE.token_to_id("<0xE4>"), encode_sp("a")[-1]
    for ids in ([lone_byte, letter], [lone_byte] * 20, [letter, *[lone_byte] * 20, letter]):
        chunks = stream(tokenizer, ids)
        assert "".join(chunks) == tokenizer.decode(ids, skip_special_tokens=True)
        assert REPLACEMENT in "".join(chunks)
    # A long run of invalid bytes is released before the end, not held forever.
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert REPLACEMENT in "".join(detokenizer.feed([lone_byte]) for _ in range(20))


@pytest.mark.parametrize("tokenizer_name", ["qwen", "sentencepiece"])
def test_window_stays_small_for_long_outputs(qwen: Any, tokenizer_name: str) -> None:
    text = ("The quick brown fox 跳过了 the lazy dog 🐕. " * 60).strip()
    inner: TextDecoder = qwen if tokenizer_name == "qwen" else SENTENCEPIECE
    ids = encode_qwen(qwen, text) if tokenizer_name == "qwen" else encode_sp(text)
    counting = CountingDecoder(inner)
    chunks = stream(counting, ids)
    assert "".join(chunks) == inner.decode(ids, skip_special_tokens=True)
    assert len(ids) > 600
    assert max(counting.window_lengths) <= 12
    assert len(counting.window_lengths) <= 2 * len(ids) + 4


def test_empty_feed_and_empty_output(qwen: Any) -> None:
    detokenizer = IncrementalDetokenizer(qwen)
    assert detokenizer.feed([]) == ""
    assert detokenizer.flush() == ""
