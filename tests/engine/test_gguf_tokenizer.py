"""The tokenizer rebuilt from GGUF metadata matches the upstream Hugging Face tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from tokenizers import Tokenizer

from r1serve.engine.text.gguf_tokenizer import build_gguf_tokenizer, read_gguf_metadata
from r1serve.engine.text.tokenizer import HFTokenizer
from r1serve.errors import UnsupportedModelError
from support.models import TINY_R1_HF

R1_CONTROL_TOKENS = [
    token["content"]
    for token in json.loads((TINY_R1_HF / "tokenizer.json").read_text(encoding="utf-8"))[
        "added_tokens"
    ]
]

_BASE = [
    "",
    "hi",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say we've done it; you'd agree, wouldn't you?",
    "HELLO World MiXeD cAsE",
    "a",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "\ttab\tseparated\tvalues",
    "line one\nline two\r\nline three\rline four",
    "\n\n\n",
    "     ",
    "x          y",
    "\u00a0non-breaking\u2009thin\u3000ideographic space",
    "你好，世界",
    "深度求索是一家人工智能公司。",
    "混合 mixed 文本 text 123",
    "日本語のテキストです",
    "한국어 텍스트",
    "Ελληνικά κείμενα",
    "Русский текст с цифрами 2025",
    "مرحبا بالعالم",
    "עברית",
    "हिन्दी पाठ",
    "😀",
    "👍🏽 thumbs up with skin tone",
    "👨‍👩‍👧‍👦 family emoji (ZWJ sequence)",
    "🇫🇷🇯🇵 flags",
    "emoji at end 🎉🎉",
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "import numpy as np\nnp.array([1, 2, 3]).reshape(-1, 1)",
    '{"key": "value", "list": [1, 2.5, null, true]}',
    '<div class="x">&amp; &lt;tag&gt;</div>',
    "SELECT * FROM users WHERE id = 42;",
    "$ ls -la | grep '.py' > out.txt 2>&1",
    "https://example.com/path?query=1&b=2#frag",
    "user@example.com",
    "1234567890",
    "3.14159265358979",
    "1,000,000 and 1.000.000",
    "-42 +17 1e-9 0x1F 0b1010",
    "2025-01-20T12:34:56Z",
    "!!!???...,,,;;;:::",
    "'single' \"double\" `back`",
    "€£¥₹ currency",
    "∑∫√∞≠≤≥ math",
    "→ ← ↑ ↓ arrows",
    "café naïve résumé coöperate",
    "e\u0301",  # e + combining acute: not NFC
    "cafe\u0301",  # not NFC
    "\u212b ångström sign",  # U+212B normalizes to U+00C5
    "\u1e9b\u0323",  # long s with dots: NFC changes it
    "Ａｂｃ full-width letters",
    "ﬁ ligature",
    "\u200b zero width space",
    "\ufeff BOM at start",
    "A" * 300,
    "ab" * 100,
    " ".join(["word"] * 50),
    "[PAD151665] is not a token upstream",
    "<|im_start|>system\nnot an R1 token<|im_end|>",
    "<think>\nreasoning here\n</think>\n\nanswer",
    "<｜User｜>hi<｜Assistant｜>",
    "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>",
    "<｜end▁of▁sentence｜>",
    "text<｜end▁of▁sentence｜>more text",
    "<|fim_prefix|>def f(<|fim_suffix|>):<|fim_middle|>",
    '<tool_call>{"name": "f"}</tool_call>',
    "<｜User <｜User｜ ｜User｜> partial tokens",
    "｜ full-width vertical line and ▁ lower one eighth block",
]


def corpus() -> list[str]:
    """At least 100 strings: the base set, every R1 control token alone and in context."""
    texts = list(_BASE)
    for token in R1_CONTROL_TOKENS:
        texts += [token, f"before {token} after", f"{token}{token}", f"你好{token}😀"]
    return texts


def test_corpus_is_large_enough() -> None:
    assert len(corpus()) >= 100
    assert len(R1_CONTROL_TOKENS) == 22


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_gguf_ids_match_upstream_on_corpus(
    tiny_gguf_tokenizer: HFTokenizer, upstream_tiny_tokenizer: Tokenizer, add_special_tokens: bool
) -> None:
    for text in corpus():
        expected = upstream_tiny_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        got = tiny_gguf_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        assert got == expected, text


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_gguf_decode_matches_upstream_on_corpus(
    tiny_gguf_tokenizer: HFTokenizer, upstream_tiny_tokenizer: Tokenizer, skip_special_tokens: bool
) -> None:
    for text in corpus():
        ids = upstream_tiny_tokenizer.encode(text, add_special_tokens=True).ids
        expected = upstream_tiny_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        got = tiny_gguf_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        assert got == expected, text


def test_gguf_special_flags_match_upstream(
    tiny_gguf_tokenizer: HFTokenizer, upstream_tiny_tokenizer: Tokenizer
) -> None:
    upstream = {
        token.content: token.special
        for token in upstream_tiny_tokenizer.get_added_tokens_decoder().values()
    }
    ours = {
        token.content: token.special
        for token in tiny_gguf_tokenizer.backend.get_added_tokens_decoder().values()
    }
    assert ours == upstream
    assert upstream["<｜User｜>"] is False and upstream["<｜begin▁of▁sentence｜>"] is True


def test_gguf_bos_eos_and_sizes(tiny_gguf_tokenizer: HFTokenizer) -> None:
    assert tiny_gguf_tokenizer.bos_token_id == 151646
    assert tiny_gguf_tokenizer.eos_token_ids == frozenset({151643})
    assert tiny_gguf_tokenizer.encode("hi", add_special_tokens=True) == [151646, 6023]
    # llama.cpp's [PADn] filler rows are not tokens, as upstream has 151,665 of them.
    assert tiny_gguf_tokenizer.backend.get_vocab_size() == 151665
    assert tiny_gguf_tokenizer.token_to_id("[PAD151665]") is None


def test_gguf_metadata_extras(tiny_gguf_alone: Path) -> None:
    built = build_gguf_tokenizer(tiny_gguf_alone)
    upstream_template = json.loads(
        (TINY_R1_HF / "tokenizer_config.json").read_text(encoding="utf-8")
    )["chat_template"]
    assert built.chat_template == upstream_template
    assert built.context_length == 4096
    assert built.bos_token == "<｜begin▁of▁sentence｜>"
    assert built.eos_token == "<｜end▁of▁sentence｜>"


def test_unknown_pre_tokenizer_is_named(tiny_gguf_alone: Path) -> None:
    metadata = read_gguf_metadata(tiny_gguf_alone)
    metadata["tokenizer.ggml.pre"] = "chatglm-bpe"
    with pytest.raises(UnsupportedModelError, match="'chatglm-bpe'"):
        build_gguf_tokenizer(tiny_gguf_alone, metadata)


def test_unknown_tokenizer_model_is_named(tiny_gguf_alone: Path) -> None:
    metadata = read_gguf_metadata(tiny_gguf_alone)
    metadata["tokenizer.ggml.model"] = "rwkv"
    with pytest.raises(UnsupportedModelError, match="'rwkv'"):
        build_gguf_tokenizer(tiny_gguf_alone, metadata)


def test_smollm2_control_tokens_are_single_ids(smollm2_tokenizer: HFTokenizer) -> None:
    text = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    ids = smollm2_tokenizer.encode(text)
    assert ids[0] == smollm2_tokenizer.token_to_id("<|im_start|>") == 1
    assert ids.count(1) == 2
    assert ids.count(2) == 1 and smollm2_tokenizer.token_to_id("<|im_end|>") == 2
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == text
    assert smollm2_tokenizer.decode(ids) == "user\nHi there\nassistant\n"
    assert smollm2_tokenizer.bos_token_id == 1
    assert smollm2_tokenizer.eos_token_ids == frozenset({2})
    # add_bos_token is false in SmolLM2's GGUF, as in its HF tokenizer.
    assert smollm2_tokenizer.encode("hi", add_special_tokens=True) == smollm2_tokenizer.encode("hi")


def test_smollm2_round_trips(smollm2_tokenizer: HFTokenizer) -> None:
    for text in _BASE:
        ids = smollm2_tokenizer.encode_plain(text)
        assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_smollm2_splits_digits_like_its_hf_tokenizer(smollm2_tokenizer: HFTokenizer) -> None:
    # SmolLM2's tokenizer.json: Digits(individual_digits) before the GPT-2 byte-level regex.
    tokens = smollm2_tokenizer.backend.encode("Price 12345 dollars").tokens
    assert tokens == ["Price", "Ġ", "1", "2", "3", "4", "5", "Ġdollars"]
    assert smollm2_tokenizer.backend.encode("I'm here").tokens == ["I", "'m", "Ġhere"]


def write_sentencepiece_gguf(path: Path) -> None:
    """A tiny llama-style (SentencePiece) vocabulary: specials, 256 byte tokens, a few pieces."""
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁he", "▁hell", "▁hello"]
    pieces += ["or", "▁w", "▁wor", "▁worl", "▁world"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces))
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_sentencepiece_gguf_is_refused_while_conversion_loses_text(tmp_path: Path) -> None:
    path = tmp_path / "spm.gguf"
    write_sentencepiece_gguf(path)
    with pytest.raises(
        UnsupportedModelError, match="SentencePiece GGUF tokenizers are not supported"
    ):
        build_gguf_tokenizer(path)
