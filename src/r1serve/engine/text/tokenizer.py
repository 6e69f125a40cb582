"""The server's tokenizer: a ``tokenizers.Tokenizer`` with a safe way to encode user text.

``encode`` parses added tokens (``<|im_start|>``, ``<｜User｜>``) as single ids; it is for text
that comes from the chat template. ``encode_plain`` is for text that comes from a user: it runs a
second copy of the tokenizer that has no added tokens at all, so typed control-token strings stay
ordinary text. ``tokenizers``' own ``encode_special_tokens`` is not enough: it still matches
added tokens that are not flagged special, such as DeepSeek-R1's ``<｜User｜>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from r1serve.errors import RequestError, UnsupportedModelError

_SLOW_TOKENIZER_FILES = ("*.model", "vocab.json", "*.tiktoken", "vocab.txt")


@dataclass(frozen=True, slots=True)
class TokenizerFiles:
    """What a Hugging Face model directory says about its tokenizer."""

    backend: Tokenizer
    bos_token: str | None
    eos_token: str | None
    chat_template: str | None


class HFTokenizer:
    """Implements ``r1serve.engine.protocol.Tokenizer`` around a ``tokenizers.Tokenizer``."""

    def __init__(
        self,
        backend: Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        extra_eos_token_ids: Iterable[int] = (),
        vocab_size: int | None = None,
    ) -> None:
        self._backend = backend
        self._plain = _without_added_tokens(backend)
        added = backend.get_added_tokens_decoder()
        self._added_ids = frozenset(added)
        self._added_tokens = frozenset(token.content for token in added.values())
        self._special_ids = frozenset(i for i, token in added.items() if token.special)
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._bos_token_id = self._id_of(bos_token)
        eos_id = self._id_of(eos_token)
        eos_ids = set(extra_eos_token_ids)
        if eos_id is not None:
            eos_ids.add(eos_id)
        self._eos_token_ids = frozenset(eos_ids)
        self._vocab_size = vocab_size or backend.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, directory: Path) -> HFTokenizer:
        """The tokenizer of a Hugging Face model directory."""
        files = read_tokenizer_dir(directory)
        return cls(files.backend, bos_token=files.bos_token, eos_token=files.eos_token)

    @classmethod
    def from_gguf(cls, path: Path) -> HFTokenizer:
        """The tokenizer described by a GGUF file's metadata."""
        from r1serve.engine.text.gguf_tokenizer import build_gguf_tokenizer

        built = build_gguf_tokenizer(path)
        return cls(built.tokenizer, bos_token=built.bos_token, eos_token=built.eos_token)

    @property
    def backend(self) -> Tokenizer:
        return self._backend

    @property
    def bos_token(self) -> str | None:
        return self._bos_token

    @property
    def eos_token(self) -> str | None:
        return self._eos_token

    @property
    def bos_token_id(self) -> int | None:
        return self._bos_token_id

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos_token_ids

    @property
    def vocab_size(self) -> int:
        """Rows of the model's embedding; may exceed the tokenizer's own size."""
        return self._vocab_size

    @property
    def added_tokens(self) -> frozenset[str]:
        """Every added token's text, special or not."""
        return self._added_tokens

    def token_to_id(self, token: str) -> int | None:
        """The id of one token string, or None when it is not a single token."""
        return self._backend.token_to_id(token)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Tokenize template text: added-token strings become their ids."""
        return list(self._backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_plain(self, text: str) -> list[int]:
        """Tokenize user text: no added token (special or not) is ever produced."""
        ids = list(self._plain.encode(text, add_special_tokens=False).ids)
        # The plain tokenizer has no added tokens; a vocabulary whose merges could still build one
        # would let user text become a control token, so refuse rather than pass it on.
        if not self._added_ids.isdisjoint(ids):
            raise RequestError("the text cannot be tokenized without producing control tokens")
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of the ids; ids past the tokenizer's vocabulary decode to nothing."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def is_special(self, token_id: int) -> bool:
        """Whether the id is an added token flagged special (skipped by ``decode``)."""
        return token_id in self._special_ids

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self._backend.token_to_id(token)


def _without_added_tokens(backend: Tokenizer) -> Tokenizer:
    """A copy of the tokenizer with no added tokens (its post-processor still works by id)."""
    document = json.loads(backend.to_str())
    document["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(document))


def read_tokenizer_dir(directory: Path) -> TokenizerFiles:
    """Load a Hugging Face directory's tokenizer, its BOS/EOS strings and its chat template."""
    config = _read_json(directory / "tokenizer_config.json")
    tokenizer_file = directory / "tokenizer.json"
    if tokenizer_file.is_file():
        backend = Tokenizer.from_file(str(tokenizer_file))
        bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        if bos is None or eos is None:
            special_map = _read_json(directory / "special_tokens_map.json")
            bos = bos or _token_text(special_map.get("bos_token"))
            eos = eos or _token_text(special_map.get("eos_token"))
    else:
        backend, bos, eos = _convert_with_transformers(directory)
    return TokenizerFiles(backend, bos, eos, _chat_template(directory, config))


def _convert_with_transformers(directory: Path) -> tuple[Tokenizer, str | None, str | None]:
    """For models that ship only sentencepiece files: transformers' conversion to a fast one."""
    from transformers import AutoTokenizer

    # transformers 5 builds an empty tokenizer from no files at all; only convert real ones.
    if not any(f for pattern in _SLOW_TOKENIZER_FILES for f in directory.glob(pattern)):
        raise UnsupportedModelError(
            f"{directory} has no tokenizer: no tokenizer.json, tokenizer.model or vocab files"
        )
    try:
        converted = AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        backend = converted.backend_tokenizer
    except Exception as exc:  # any failure here means the same thing to the user
        raise UnsupportedModelError(
            f"{directory}: no tokenizer.json, and transformers cannot convert its tokenizer: {exc}"
        ) from exc
    if not isinstance(backend, Tokenizer):
        raise UnsupportedModelError(f"{directory}: the tokenizer has no fast (tokenizers) form")
    return backend, converted.bos_token, converted.eos_token


def _chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    """chat_template.jinja (transformers 5 layout) or tokenizer_config.json's template."""
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {item.get("name"): item.get("template") for item in template}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _token_text(value: object) -> str | None:
    """A token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}
