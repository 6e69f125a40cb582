"""Token counts of prompts sent to an upstream, for context fitting and quotas.

The upstream applies its own chat template, so r1serve only needs to know how many tokens a
prompt will take. Three ways, chosen by ``UpstreamConfig.tokenizer``:

- ``upstream``: the server's ``POST /tokenize`` at the root beside ``/v1``: vLLM's and
  SGLang's, asked with the same messages, or llama.cpp's, asked with the prompt its
  ``/apply-template`` renders from them; exact.
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
        ids = self._counter.encode(text, add_special_tokens=add_special_tokens)
        return ids if ids is not None else super().encode(text)


VLLM = "vllm"  # {"model", "prompt" | "messages"} -> {"tokens", "count", ...}; SGLang alike
LLAMACPP = "llamacpp"  # {"content"} -> {"tokens"}; chats rendered by POST /apply-template


class RemoteCounter(PromptCounter):
    """The upstream's ``POST /tokenize`` (blocking: prompts are counted on worker threads).

    Two shapes: vLLM's (and SGLang's) takes the chat messages themselves; llama.cpp's takes
    only text, so a chat is first rendered by its ``POST /apply-template`` (the prompt its
    ``/v1/chat/completions`` would build) and that text tokenized as a completion would be."""

    exact = True

    def __init__(
        self,
        root: str,
        model: str,
        headers: Mapping[str, str],
        timeout_s: float,
        shape: str = VLLM,
    ) -> None:
        super().__init__()
        self._root = root
        self._model = model
        self._shape = shape
        self._client = httpx.Client(headers=dict(headers), timeout=timeout_s)
        self.tokenizer = _RemoteTokenizer(self)
        self.name = f"the upstream's {root}/tokenize"
        if shape == LLAMACPP:
            self.name += " (llama.cpp, after /apply-template)"

    def _post(self, path: str, body: dict[str, object]) -> dict[str, Any] | None:
        try:
            response = self._client.post(f"{self._root}/{path}", json=body)
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("upstream /%s failed (%r); estimating this prompt", path, exc)
            return None
        if not isinstance(answer, dict):
            log.warning("upstream /%s answered %.200r; estimating this prompt", path, answer)
            return None
        return answer

    def _tokens(self, body: dict[str, object]) -> list[int] | None:
        answer = self._post("tokenize", body)
        tokens = None if answer is None else answer.get("tokens")
        try:
            ids = [int(t) for t in tokens] if isinstance(tokens, list) else None
        except (TypeError, ValueError):
            ids = None
        if not ids:  # an empty answer for a real prompt is a shape this does not know
            if answer is not None:
                log.warning("upstream /tokenize gave no tokens; estimating this prompt")
            return None
        return ids

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int] | None:
        if not text:
            return []
        if self._shape == LLAMACPP:
            return self._tokens({"content": text, "add_special": add_special_tokens})
        return self._tokens(
            {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens}
        )

    def tokenize(self, body: dict[str, object]) -> list[int] | None:
        """Token ids of a vLLM-shaped body (``prompt`` or ``messages``); None when it failed."""
        return self._tokens({"model": self._model, **body})

    def chat_ids(self, messages: Sequence[Mapping[str, object]]) -> list[int] | None:
        """The prompt's token ids as the upstream's chat completions would count them."""
        wire = [dict(m) for m in messages]
        if self._shape != LLAMACPP:
            return self.tokenize({"messages": wire, "add_generation_prompt": True})
        rendered = self._post("apply-template", {"messages": wire})
        text = None if rendered is None else rendered.get("prompt")
        if not isinstance(text, str) or not text:
            return None
        # As llama.cpp tokenizes a chat prompt: its BOS added, special tokens parsed.
        return self._tokens({"content": text, "add_special": True, "parse_special": True})

    def chat(self, messages: Sequence[Mapping[str, object]]) -> Prompt:
        ids = self.chat_ids(messages)
        if ids is None:
            return super().chat(messages)
        text = "\n".join(_text_of(m) for m in messages)
        return Prompt(tuple(ids), text, origin=PromptOrigin(tuple(messages)))

    def close(self) -> None:
        self._client.close()


def _answers_tokens(response: httpx.Response) -> bool:
    try:
        tokens = response.json().get("tokens")
    except (ValueError, AttributeError):
        return False
    return response.status_code == 200 and isinstance(tokens, list) and len(tokens) > 0


def tokenize_shape(
    root: str, model: str, headers: Mapping[str, str], timeout_s: float
) -> str | None:
    """Which ``POST /tokenize`` the upstream answers: ``VLLM``, ``LLAMACPP`` or None (neither).

    Each shape answers the other's body with 200 but no tokens (llama.cpp ignores ``prompt``),
    so a shape counts only when it gives tokens for "hi"; llama.cpp's also needs its
    ``/apply-template`` to count chats."""
    with httpx.Client(headers=dict(headers), timeout=timeout_s) as client:
        try:
            vllm = client.post(f"{root}/tokenize", json={"model": model, "prompt": "hi"})
            if _answers_tokens(vllm):
                return VLLM
            if not _answers_tokens(client.post(f"{root}/tokenize", json={"content": "hi"})):
                return None
            probe = [{"role": "user", "content": "hi"}]
            rendered = client.post(f"{root}/apply-template", json={"messages": probe})
            prompt = rendered.json().get("prompt") if rendered.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
    return LLAMACPP if isinstance(prompt, str) and prompt else None
