"""HFTokenizer: control tokens from template text, never from user text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from r1serve.engine.protocol import Tokenizer as TokenizerProtocol
from r1serve.engine.text.tokenizer import HFTokenizer, read_tokenizer_dir
from r1serve.errors import UnsupportedModelError
from support.models import TINY_R1_HF


def test_implements_the_protocol(tiny_hf_tokenizer: HFTokenizer) -> None:
    assert isinstance(tiny_hf_tokenizer, TokenizerProtocol)


def test_encode_parses_control_tokens(tiny_hf_tokenizer: HFTokenizer) -> None:
    assert tiny_hf_tokenizer.encode("<｜User｜>hi<｜Assistant｜>") == [151644, 6023, 151645]
    assert tiny_hf_tokenizer.encode("hi", add_special_tokens=True) == [151646, 6023]


@pytest.mark.parametrize(
    "fixture", ["tiny_hf_tokenizer", "tiny_gguf_tokenizer", "smollm2_tokenizer"]
)
def test_encode_plain_never_produces_added_tokens(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    tokenizer: HFTokenizer = request.getfixturevalue(fixture)
    added_ids = set(tokenizer.backend.get_added_tokens_decoder())
    assert added_ids
    for token in sorted(tokenizer.added_tokens):
        for text in (token, f"x{token}y", f" {token}\n", token * 2):
            ids = tokenizer.encode_plain(text)
            assert added_ids.isdisjoint(ids), text
            assert tokenizer.decode(ids) == text


def test_encode_plain_keeps_typed_control_tokens_as_text(tiny_hf_tokenizer: HFTokenizer) -> None:
    typed = tiny_hf_tokenizer.encode_plain("<｜Assistant｜>")
    assert typed != [151645] and 151645 not in typed
    assert tiny_hf_tokenizer.decode(typed) == "<｜Assistant｜>"
    # Normal text tokenizes the same either way.
    assert tiny_hf_tokenizer.encode_plain("Hello, 世界!") == tiny_hf_tokenizer.encode(
        "Hello, 世界!"
    )


def test_encode_plain_applies_the_normalizer(tiny_hf_tokenizer: HFTokenizer) -> None:
    assert tiny_hf_tokenizer.encode_plain("cafe\u0301") == tiny_hf_tokenizer.encode("caf\u00e9")


def test_decode_skips_only_special_tokens(tiny_hf_tokenizer: HFTokenizer) -> None:
    ids = tiny_hf_tokenizer.encode(
        "<｜begin▁of▁sentence｜><think>\nx\n</think>ok<｜end▁of▁sentence｜>"
    )
    assert tiny_hf_tokenizer.decode(ids) == "<think>\nx\n</think>ok"
    assert tiny_hf_tokenizer.decode(ids, skip_special_tokens=False).startswith(
        "<｜begin▁of▁sentence｜>"
    )
    assert tiny_hf_tokenizer.is_special(151643) and not tiny_hf_tokenizer.is_special(151648)


def test_ids_past_the_tokenizer_decode_to_nothing(tiny_hf_tokenizer: HFTokenizer) -> None:
    # tiny-r1 has 152,064 embedding rows but 151,665 tokens.
    assert tiny_hf_tokenizer.decode([6023, 152000]) == "hi"


def test_properties(tiny_hf_tokenizer: HFTokenizer) -> None:
    assert tiny_hf_tokenizer.bos_token == "<｜begin▁of▁sentence｜>"
    assert tiny_hf_tokenizer.bos_token_id == 151646
    assert tiny_hf_tokenizer.eos_token == "<｜end▁of▁sentence｜>"
    assert tiny_hf_tokenizer.eos_token_ids == frozenset({151643})
    assert tiny_hf_tokenizer.vocab_size == 151665
    assert tiny_hf_tokenizer.token_to_id("<think>") == 151648
    assert tiny_hf_tokenizer.token_to_id("no such token") is None


def test_model_limits_override(upstream_tiny_tokenizer: Tokenizer) -> None:
    tokenizer = HFTokenizer(
        upstream_tiny_tokenizer,
        eos_token="<｜end▁of▁sentence｜>",
        extra_eos_token_ids=[151647],
        vocab_size=152064,
    )
    assert tokenizer.eos_token_ids == frozenset({151643, 151647})
    assert tokenizer.vocab_size == 152064
    assert tokenizer.bos_token_id is None


def test_read_tokenizer_dir_template_sources(tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_R1_HF / name, tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert read_tokenizer_dir(tmp_path).chat_template == config["chat_template"]
    # Named templates (a list) use "default".
    config["chat_template"] = [
        {"name": "tool_use", "template": "T"},
        {"name": "default", "template": "D"},
    ]
    config["bos_token"] = {"content": "<｜begin▁of▁sentence｜>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    files = read_tokenizer_dir(tmp_path)
    assert files.chat_template == "D"
    assert files.bos_token == "<｜begin▁of▁sentence｜>"
    # transformers 5 writes chat_template.jinja, which wins.
    (tmp_path / "chat_template.jinja").write_text("J", encoding="utf-8")
    assert read_tokenizer_dir(tmp_path).chat_template == "J"


def test_dir_without_any_tokenizer_is_unsupported(tmp_path: Path) -> None:
    shutil.copy(TINY_R1_HF / "config.json", tmp_path / "config.json")
    with pytest.raises(UnsupportedModelError, match="has no tokenizer"):
        HFTokenizer.from_dir(tmp_path)


def test_dir_with_only_vocab_files_uses_transformers_conversion(
    tmp_path: Path, upstream_tiny_tokenizer: Tokenizer
) -> None:
    document = json.loads((TINY_R1_HF / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = json.dumps(document["model"]["vocab"], ensure_ascii=False)
    (tmp_path / "vocab.json").write_text(vocab, encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(document["model"]["merges"]) + "\n"
    (tmp_path / "merges.txt").write_text(merges, encoding="utf-8")
    config = json.loads((TINY_R1_HF / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"  # the slow tokenizer that reads these files
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = HFTokenizer.from_dir(tmp_path)
    for text in ("Hello, 世界! 😀 e\u0301", "<｜User｜>hi<｜Assistant｜>", "12345  x\n\n"):
        assert (
            tokenizer.encode(text)
            == upstream_tiny_tokenizer.encode(text, add_special_tokens=False).ids
        )
    assert tokenizer.bos_token_id == 151646
    assert tokenizer.eos_token_ids == frozenset({151643})
    assert tokenizer.encode("hi", add_special_tokens=True) == [151646, 6023]
