"""Token counts of prompts sent to an upstream, for context fitting and quotas.

The upstream applies its own chat template, so r1serve only needs to know how many tokens a
prompt will take. Three ways, chosen by ``UpstreamConfig.tokenizer``:

- ``upstream``: the server's ``POST /tokenize`` (vLLM and SGLang have one, at the root beside
  ``/v1``), asked with the same messages; exact.
- a local folder or ``tokenizer.json``: that tokenizer and its chat template, run here; exact
  when it is the upstream model's.
- ``estimate``: one token per 4 characters plus 4 per message; a documented guess. Prompt
  lengths are then not checked against the context here (the upstream checks them), and usage
  from the upstream's final chunk is what the response reports.

Counted prompts carry placeholder token ids (``0``): only their number means anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from r1serve.engine.protocol import Prompt, PromptOrigin
from r1serve.engine.text.chat_template import ChatFormatter
from r1serve.engine.text.tokenizer import HFTokenizer, read_tokenizer_dir
from r1serve.errors import ConfigError

log = logging.getLogger("r1serve.upstream")

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


class EstimateTokenizer:
    """The ``Tokenizer`` of an upstream without one here: counts, but cannot decode."""

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset()

    @property
    def vocab_size(self) -> int:
        return 2**31 - 1  # token ids (logit_bias, stop_token_ids) are the upstream's to check

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return [0] * math.ceil(len(text) / CHARS_PER_TOKEN)

    def encode_plain(self, text: str) -> list[int]:
        return self.encode(text)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return ""


def _text_of(message: Mapping[str, object]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class PromptCounter:
    """Counts prompts by estimate; subclasses count exactly."""

    exact = False
    name = "estimate (characters / 4)"

    def __init__(self) -> None:
        self.tokenizer: Any = EstimateTokenizer()

    def chat(self, messages: Sequence[Mapping[str, object]]) -> Prompt:
        text = "\n".join(_text_of(m) for m in messages)
        n = math.ceil(len(text) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)
        return Prompt((0,) * max(1, n), text, origin=PromptOrigin(tuple(messages)))


class LocalCounter(PromptCounter):
    """A tokenizer and chat template on this machine (the upstream model's own files)."""

    exact = True

    def __init__(self, path: Path) -> None:
        folder = path.parent if path.is_file() else path
        if not (folder / "tokenizer.json").is_file():
            raise ConfigError(f"upstream tokenizer: no tokenizer.json in {folder}")
        files = read_tokenizer_dir(folder)
        self.tokenizer = HFTokenizer(
            files.backend, bos_token=files.bos_token, eos_token=files.eos_token
        )
        self._chat = None
        if files.chat_template is not None:
            self._chat = ChatFormatter(
                files.chat_template,
                self.tokenizer,
                bos_token=files.bos_token,
                eos_token=files.eos_token,
            )
        self.name = f"local tokenizer {folder}"

    def chat(self, messages: Sequence[Mapping[str, object]]) -> Prompt:
        if self._chat is None:
            text = "\n".join(_text_of(m) for m in messages)
            ids = tuple(self.tokenizer.encode_plain(text)) or (0,)
            return Prompt(ids, text, origin=PromptOrigin(tuple(messages)))
        prompt = self._chat.render(messages, add_generation_prompt=True)
        return Prompt(prompt.token_ids, prompt.text, origin=PromptOrigin(tuple(messages)))


class _RemoteTokenizer(EstimateTokenizer):
    def __init__(self, counter: RemoteCounter) -> None:
        self._counter = counter

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        ids = self._counter.tokenize({"prompt": text, "add_special_tokens": add_special_tokens})
        return ids if ids is not None else super().encode(text)


class RemoteCounter(PromptCounter):
    """The upstream's ``POST /tokenize`` (blocking: prompts are counted on worker threads)."""

    exact = True

    def __init__(self, root: str, model: str, headers: Mapping[str, str], timeout_s: float) -> None:
        super().__init__()
        self._url = f"{root}/tokenize"
        self._model = model
        self._client = httpx.Client(headers=dict(headers), timeout=timeout_s)
        self.tokenizer = _RemoteTokenizer(self)
        self.name = f"the upstream's {self._url}"

    def tokenize(self, body: dict[str, object]) -> list[int] | None:
        try:
            response = self._client.post(self._url, json={"model": self._model, **body})
            response.raise_for_status()
            tokens = response.json()["tokens"]
            return [int(t) for t in tokens]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("upstream /tokenize failed (%r); estimating this prompt", exc)
            return None

    def chat(self, messages: Sequence[Mapping[str, object]]) -> Prompt:
        body = {"messages": [dict(m) for m in messages], "add_generation_prompt": True}
        ids = self.tokenize(body)
        if ids is None:
            return super().chat(messages)
        text = "\n".join(_text_of(m) for m in messages)
        return Prompt(tuple(ids), text, origin=PromptOrigin(tuple(messages)))

    def close(self) -> None:
        self._client.close()


def offers_tokenize(root: str, model: str, headers: Mapping[str, str], timeout_s: float) -> bool:
    """Whether the upstream answers ``POST /tokenize`` with token ids (vLLM, SGLang)."""
    try:
        response = httpx.post(
            f"{root}/tokenize",
            json={"model": model, "prompt": "hi"},
            headers=dict(headers),
            timeout=timeout_s,
        )
        return response.status_code == 200 and isinstance(response.json().get("tokens"), list)
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
