"""What crosses into llama.cpp's server loop and back: request bodies and streamed chunks.

r1serve keeps the text side (chat template, tokenizer, detokenizer, stop strings, reasoning
split) and hands llama.cpp only token ids and sampling values, so both engines agree on every
prompt token and every character. Pure functions; the engine thread calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r1serve.engine.protocol import LOGPROB_FLOOR, FinishReason, GenerationRequest, TokenLogprob

# r1serve samples with these filters in this order (engine/transformers/sampling.py); llama.cpp's
# default chain adds DRY, typical-p, XTC and top-n-sigma, all of which r1serve never applies.
_SAMPLERS = ["penalties", "top_k", "top_p", "min_p", "temperature"]


def completion_body(
    request: GenerationRequest,
    max_tokens: int,
    *,
    prompt: Sequence[int] | None = None,
    grammar: str | None = None,
) -> dict[str, Any]:
    """The streaming ``/completion`` request for (one leg of) one r1serve request.

    The prompt goes as token ids, so text a user typed that looks like a control token stays
    the text r1serve's tokenizer made of it; ``prompt`` overrides the request's own (a later
    leg: the prompt and the output so far). ``n_probs`` makes every chunk carry the id of the
    sampled token; with ``logprobs`` asked, llama.cpp's probabilities before sampling (a
    softmax of the raw logits) with that many alternatives. Stop strings and stop token ids
    are matched by r1serve, not llama.cpp. ``grammar``: llama.cpp's grammar text. Every chunk
    has ``timings`` (with the count of sampled tokens, ``r1serve.engine.llamacpp.held``).
    """
    p = request.params
    prompt_ids = list(request.prompt_token_ids if prompt is None else prompt)
    body: dict[str, Any] = {
        "prompt": prompt_ids,
        "stream": True,
        "n_predict": max_tokens,
        "n_probs": 1 if p.logprobs is None else max(1, p.logprobs),
        # Without logprobs: the sampler's own candidates, no softmax over the vocabulary.
        "post_sampling_probs": p.logprobs is None,
        "cache_prompt": True,
        "samplers": _SAMPLERS,
        "temperature": p.temperature,
        "top_k": p.top_k if p.top_k > 0 else 0,
        "top_p": p.top_p,
        "min_p": p.min_p,
        "repeat_penalty": p.repetition_penalty,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        # penalties look at the whole sequence, as r1serve's sampler does
        "repeat_last_n": len(prompt_ids) + max_tokens,
        "typical_p": 1.0,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "mirostat": 0,
        "ignore_eos": p.ignore_eos,
        "stop": [],
        # Each chunk then says how many tokens were sampled: the count of those held back.
        "timings_per_token": True,
    }
    if p.greedy:
        # temperature 0 in llama.cpp is greedy too; top_k 1 makes it exact whatever the chain.
        body["top_k"] = 1
    if p.seed is not None:
        body["seed"] = p.seed % 2**32
    if p.logit_bias:
        body["logit_bias"] = [[int(token), float(bias)] for token, bias in p.logit_bias.items()]
    if grammar is not None:
        body["grammar"] = grammar
    return body


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed chunk: the sampled token ids, and on the last one how it ended.

    ``logprobs``: one per token id when the request asked for them (``top`` alternatives).
    ``predicted``: the tokens the sequence has sampled so far, these included (more than were
    sent when llama.cpp held some back: ``r1serve.engine.llamacpp.held``); ``data``: the bytes
    of the chunk's text, held-back tokens' bytes first (each token entry's ``bytes`` are the
    chunk's whole text, not the token's own).
    """

    token_ids: tuple[int, ...]
    finish_reason: str | None = None
    cached_tokens: int = 0
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    predicted: int | None = None
    data: bytes = b""


def parse_chunk(chunk: Mapping[str, Any], top: int | None = None) -> Chunk:
    """Read the token ids (and the end) from one streamed llama.cpp completion chunk.

    ``top``: the alternatives a request asked for (None: no log probabilities).
    """
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, Mapping) else error
        return Chunk((), error=str(message))
    choices = chunk.get("choices")
    if choices:  # OpenAI-shaped chunk
        choice = choices[0]
        logprobs = choice.get("logprobs") or {}
        content = logprobs.get("content") or []
        finish = choice.get("finish_reason")
        text = choice.get("text")
    else:  # llama.cpp's native shape
        content = chunk.get("completion_probabilities") or []
        finish = chunk.get("stop_type") if chunk.get("stop") else None
        text = chunk.get("content")
    ids = tuple(int(item["id"]) for item in content)
    usage = chunk.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or (chunk.get("timings") or {}).get("cache_n") or 0
    logprobs = () if top is None else tuple(_logprob(item, top) for item in content)
    predicted = chunk.get("tokens_predicted", (chunk.get("timings") or {}).get("predicted_n"))
    return Chunk(
        ids,
        finish,
        int(cached) if finish else 0,
        logprobs=logprobs,
        predicted=int(predicted) if isinstance(predicted, int) else None,
        data=_chunk_bytes(content, text),
    )


def _chunk_bytes(content: Sequence[Mapping[str, Any]], text: Any) -> bytes:
    """The chunk's text as bytes: its token entries' ``bytes`` (exact even where the text is not
    valid UTF-8), else the text."""
    pieces = [item.get("bytes") for item in content]
    if content and all(isinstance(p, list) for p in pieces):
        return b"".join(bytes(p) for p in pieces if isinstance(p, list))
    if not isinstance(text, str):
        return b""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _logprob(item: Mapping[str, Any], top: int) -> TokenLogprob:
    """One token's entry (``post_sampling_probs: false``) in r1serve's shape."""
    alternatives = (item.get("top_logprobs") or [])[:top]
    return TokenLogprob(
        token_id=int(item["id"]),
        logprob=_finite(item.get("logprob")),
        top=tuple((int(alt["id"]), _finite(alt.get("logprob"))) for alt in alternatives),
    )


def _finite(value: Any) -> float:
    # A token the model gives no chance comes back as null or -inf; OpenAI's floor instead.
    return max(float(value), LOGPROB_FLOOR) if isinstance(value, int | float) else LOGPROB_FLOOR


def finish_reason(llama_reason: str) -> FinishReason:
    """llama.cpp's reason for ending a sequence, in r1serve's words."""
    if llama_reason in ("length", "limit"):
        return "length"
    return "stop"
