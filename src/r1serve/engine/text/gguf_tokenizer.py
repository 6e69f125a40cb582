"""Build a fast tokenizer from a GGUF file's ``tokenizer.*`` metadata.

transformers 5.24 builds a broken tokenizer for byte-level GGUFs whose control tokens use
characters outside the byte alphabet (DeepSeek-R1's ``<｜User｜>``, ``<｜begin▁of▁sentence｜>``): it
drops them, so they get split into pieces and BOS gets an id past the vocabulary. Here the
tokenizer is written as a ``tokenizer.json`` document, the way upstream Hugging Face repos ship it,
and loaded with the ``tokenizers`` library: every added token keeps the id the GGUF gives it.

The metadata is read with transformers' GGUF reader, not ``gguf.GGUFReader``: the latter takes
~8 s on a 152k-token vocabulary, the former well under one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from r1serve.catalog.gguf_header import read_gguf_header
from r1serve.errors import UnsupportedModelError

log = logging.getLogger(__name__)

# llama.cpp token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(*, use_regex: bool) -> dict[str, Any]:
    return {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": use_regex,
    }


def _split_then_bytes(regex: str) -> dict[str, Any]:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            _byte_level(use_regex=False),
        ],
    }


# GPT-2's own regex, built into the ByteLevel pre-tokenizer.
_GPT2_BYTES = _byte_level(use_regex=True)
# StarCoder / SmolLM: every digit on its own, then GPT-2's regex (as SmolLM2's tokenizer.json).
_DIGITS_THEN_GPT2: dict[str, Any] = {
    "type": "Sequence",
    "pretokenizers": [{"type": "Digits", "individual_digits": True}, _GPT2_BYTES],
}
_NFC: dict[str, Any] = {"type": "NFC"}

# tokenizer.ggml.pre -> (normalizer, pre-tokenizer), as the upstream tokenizer.json files have them.
_PRE_TOKENIZERS: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "qwen2": (_NFC, _split_then_bytes(_QWEN2_SPLIT)),
    "deepseek-r1-qwen": (_NFC, _split_then_bytes(_QWEN2_SPLIT)),
    "llama-bpe": (None, _split_then_bytes(_LLAMA3_SPLIT)),
    "llama3": (None, _split_then_bytes(_LLAMA3_SPLIT)),
    "llama-v3": (None, _split_then_bytes(_LLAMA3_SPLIT)),
    "smollm": (None, _DIGITS_THEN_GPT2),
    "starcoder": (None, _DIGITS_THEN_GPT2),
    "gpt2": (None, _GPT2_BYTES),
}

# Added tokens that upstream Hugging Face tokenizers add as *not* special, although llama.cpp marks
# most of them CONTROL because they look special. A GGUF does not keep HF's flag, so this list
# restores it for the families we serve: DeepSeek-R1 distills (Qwen and Llama) and Qwen2.5.
_UPSTREAM_NOT_SPECIAL = frozenset(
    {
        "<｜User｜>",
        "<｜Assistant｜>",
        "<|EOT|>",
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    }
)

_METADATA_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


@dataclass(frozen=True, slots=True)
class GGUFTokenizer:
    """A tokenizer rebuilt from GGUF metadata, with what the metadata says around it."""

    tokenizer: Tokenizer
    bos_token: str | None
    eos_token: str | None
    chat_template: str | None
    context_length: int | None


def read_gguf_metadata(path: Path, arrays: tuple[str, ...] = _METADATA_ARRAYS) -> dict[str, Any]:
    """The GGUF file's metadata; the string arrays named are read in full, others counted."""
    try:
        header = read_gguf_header(path, keep=arrays)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"cannot read GGUF file {path}: {exc}") from exc
    metadata: dict[str, Any] = dict(header.metadata)
    for key, length in header.array_lengths.items():
        if metadata[key] is None:  # a long array not asked for: its length, as transformers gave
            metadata[key] = length
    return metadata


def build_gguf_tokenizer(path: Path, metadata: dict[str, Any] | None = None) -> GGUFTokenizer:
    """The fast tokenizer described by a GGUF file's metadata."""
    meta = metadata if metadata is not None else read_gguf_metadata(path)
    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tokenizer = _byte_level_tokenizer(meta)
    elif kind == "llama":
        tokenizer = _sentencepiece_tokenizer(path, meta)
    else:
        raise UnsupportedModelError(
            f"{path.name}: GGUF tokenizer model {kind!r} is not supported "
            "(supported: 'gpt2' byte-level BPE and 'llama' SentencePiece)"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    architecture = meta.get("general.architecture")
    return GGUFTokenizer(
        tokenizer=tokenizer,
        bos_token=_token_at(tokens, meta.get("tokenizer.ggml.bos_token_id")),
        eos_token=_token_at(tokens, meta.get("tokenizer.ggml.eos_token_id")),
        chat_template=meta.get("tokenizer.chat_template"),
        context_length=meta.get(f"{architecture}.context_length"),
    )


def _token_at(tokens: list[str], token_id: int | None) -> str | None:
    if token_id is None or not 0 <= token_id < len(tokens):
        return None
    return tokens[token_id]


def _byte_level_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """Byte-level BPE (GPT-2 style) as a tokenizer.json document."""
    pre = meta.get("tokenizer.ggml.pre")
    if pre not in _PRE_TOKENIZERS:
        raise UnsupportedModelError(
            f"GGUF pre-tokenizer {pre!r} is not supported "
            f"(supported: {', '.join(sorted(_PRE_TOKENIZERS))})"
        )
    normalizer, pre_tokenizer = _PRE_TOKENIZERS[pre]
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    vocab: dict[str, int] = {}
    added: list[dict[str, Any]] = []
    always_special = {
        meta.get(f"tokenizer.ggml.{key}")
        for key in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id")
    }
    for token_id, (token, token_type) in enumerate(zip(tokens, types, strict=True)):
        if token_type in (_CONTROL, _USER_DEFINED):
            special = token_id in always_special or (
                token_type == _CONTROL and token not in _UPSTREAM_NOT_SPECIAL
            )
            added.append(_added_token(token_id, token, special=special))
        # Added tokens go into the vocabulary too: `tokenizers` gives an added token missing from
        # it a new id past the end instead of the one written here.
        if token_type != _UNUSED:  # UNUSED: llama.cpp's [PADn] filler up to the embedding size
            vocab[token] = token_id
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": _post_processor(meta, tokens),
        "decoder": _byte_level(use_regex=False),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [merge.split(" ", 1) for merge in merges],
        },
    }
    return Tokenizer.from_str(json.dumps(document))


def _added_token(token_id: int, content: str, *, special: bool) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def _post_processor(meta: dict[str, Any], tokens: list[str]) -> dict[str, Any] | None:
    """A TemplateProcessing that adds BOS and/or EOS, as add_bos_token / add_eos_token say."""
    edges: list[tuple[str, int]] = []
    for key, wanted in (("bos", "add_bos_token"), ("eos", "add_eos_token")):
        token = _token_at(tokens, meta.get(f"tokenizer.ggml.{key}_token_id"))
        if meta.get(f"tokenizer.ggml.{wanted}") and token is not None:
            edges.append((key, meta[f"tokenizer.ggml.{key}_token_id"]))
    if not edges:
        return None

    def piece(token_id: int, type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": tokens[token_id], "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict[str, Any]:
        return {"Sequence": {"id": name, "type_id": type_id}}

    def wrap(name: str, type_id: int) -> list[dict[str, Any]]:
        head = [piece(i, type_id) for key, i in edges if key == "bos"]
        tail = [piece(i, type_id) for key, i in edges if key == "eos"]
        return [*head, sequence(name, type_id), *tail]

    return {
        "type": "TemplateProcessing",
        "single": wrap("A", 0),
        "pair": [*wrap("A", 0), *wrap("B", 1)],
        "special_tokens": {
            tokens[i]: {"id": tokens[i], "ids": [i], "tokens": [tokens[i]]} for _, i in edges
        },
    }


def _sentencepiece_tokenizer(path: Path, meta: dict[str, Any]) -> Tokenizer:
    """SentencePiece GGUFs: transformers' own conversion, used only if it proves correct here."""
    from transformers import AutoTokenizer

    try:
        converted = AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
    except Exception as exc:  # transformers raises many kinds here; all mean "cannot convert"
        raise UnsupportedModelError(
            f"{path.name}: transformers cannot build its SentencePiece tokenizer: {exc}"
        ) from exc
    backend: Tokenizer = converted.backend_tokenizer
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or []
    wrong_ids = [
        token
        for token_id, (token, token_type) in enumerate(zip(tokens, types, strict=False))
        if token_type == _CONTROL and backend.token_to_id(token) != token_id
    ]
    if wrong_ids:
        raise UnsupportedModelError(
            f"{path.name}: SentencePiece GGUF tokenizers are not supported: transformers' "
            f"conversion gives {wrong_ids[0]!r} the wrong id; use the model's HF directory"
        )
    # SentencePiece keeps every character (byte fallback), so text must survive a round trip;
    # transformers 5.24's conversion drops a leading space, which changes prompts.
    for probe in _SENTENCEPIECE_PROBES:
        decoded = backend.decode(backend.encode(probe, add_special_tokens=False).ids)
        if decoded != probe:
            raise UnsupportedModelError(
                f"{path.name}: SentencePiece GGUF tokenizers are not supported: transformers' "
                f"conversion turns {probe!r} into {decoded!r}; use the model's HF directory"
            )
    return backend


_SENTENCEPIECE_PROBES = (" leading space", "two  spaces\nand a line", "naïve 数字 123 😀")
