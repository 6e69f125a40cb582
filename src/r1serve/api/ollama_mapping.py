"""Ollama's request fields onto r1serve's engine values, and r1serve's outputs onto Ollama's lines.

Pure functions over the service and engine: the routes in ``api.routes.ollama`` only call these.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from r1serve.api.ollama_schemas import (
    HINT_OPTIONS,
    ChatRequest,
    GenerateRequest,
    Options,
    ThinkLevel,
)
from r1serve.engine.protocol import Engine, Prompt, SamplingParams, output_budget
from r1serve.errors import NotFoundError, RequestError
from r1serve.generation import Generation, SamplingRequest
from r1serve.generation.reasoning import reasoning_budget

log = logging.getLogger("r1serve.api")

DEFAULT_TAG = "latest"
# Off values of the sampling methods r1serve does not have; anything else is refused.
_OFF_VALUES: dict[str, tuple[float, ...]] = {
    "typical_p": (1.0,),
    "tfs_z": (1.0,),
    "mirostat": (0,),
    "mirostat_tau": (5.0,),  # Ollama's defaults: only read when mirostat is on
    "mirostat_eta": (0.1,),
    "repeat_last_n": (-1, 64),  # -1: the whole context, as r1serve's penalties always look
}


# ---- names -------------------------------------------------------------------------------


def tagged(name: str) -> str:
    """A name in Ollama's ``name:tag`` form: store names without a GGUF file get ``:latest``."""
    return name if ":" in name else f"{name}:{DEFAULT_TAG}"


def untagged(name: str) -> str:
    """The r1serve name an Ollama ``name:tag`` means: ``:latest`` is the name itself."""
    return name.removesuffix(f":{DEFAULT_TAG}")


def served_model(names: Sequence[str], requested: str) -> str:
    """The served model's name for ``requested`` (``x`` or ``x:latest``), else 404."""
    for served in names:
        if untagged(requested) == untagged(served):
            return served
    listing = ", ".join(repr(tagged(name)) for name in names)
    raise NotFoundError(
        f"model {requested[:200]!r} not found: this server serves {listing}",
        param="model",
        code="model_not_found",
    )


def digest_of(name: str, size: int) -> str:
    """A stable stand-in for Ollama's manifest digest (r1serve has no manifests to hash)."""
    return hashlib.sha256(f"{name}\0{size}".encode()).hexdigest()


def timestamp(seconds: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.isoformat().replace("+00:00", "Z")


# ---- requests ----------------------------------------------------------------------------


def check_generation_fields(body: ChatRequest | GenerateRequest, engine: Engine) -> None:
    """400 for fields whose feature r1serve does not have, with what to do instead."""
    if body.logprobs or body.top_logprobs:
        raise RequestError("logprobs are not supported by this server", param="logprobs")
    if isinstance(body, ChatRequest):
        for message in body.messages:
            if message.images:
                raise _text_only(engine, "messages.images")
        return
    if body.images:
        raise _text_only(engine, "images")
    for name in ("suffix", "template", "context"):
        if getattr(body, name):
            raise RequestError(f"{name} is not supported by this server", param=name)


def _text_only(engine: Engine, param: str) -> RequestError:
    return RequestError(
        f"model {engine.model_name!r} is text-only: it cannot read images", param=param
    )


def generate_messages(body: GenerateRequest) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": body.system}] if body.system else []
    return [*messages, {"role": "user", "content": body.prompt or ""}]


def sampling(service: Generation, options: Options | None) -> SamplingParams:
    """Engine sampling parameters from ``options`` (in ``generation.bounds``, as every API's)."""
    options = options or Options()
    for name in options.model_extra or {}:
        if name not in HINT_OPTIONS:
            log.info("ignoring unknown Ollama option %r", name[:100])
    for name, off in _OFF_VALUES.items():
        value = getattr(options, name)
        if value is not None and value not in off:
            raise RequestError(
                f"options.{name} is not supported by this server (only {off[0]!r}, its off value)",
                param=f"options.{name}",
            )
    num_predict = options.num_predict
    asked = SamplingRequest(
        temperature=options.temperature,
        top_p=options.top_p or None,  # Ollama's 0: off
        top_k=options.top_k,
        min_p=options.min_p,
        seed=options.seed,
        stop=tuple(options.stop or ()),
        repetition_penalty=options.repeat_penalty or None,  # Ollama's 0: off
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        max_tokens=num_predict if num_predict is not None and num_predict > 0 else None,
    )
    return service.sampling(asked)


def fit_context(
    engine: Engine, prompt: Prompt, params: SamplingParams, options: Options | None
) -> SamplingParams:
    """Ollama's output budget: ``num_predict`` up to what ``num_ctx`` (at most the server's
    context) leaves after the prompt; a prompt that does not fit is a 400, never truncated."""
    num_ctx = options.num_ctx if options else None
    context = min(num_ctx or engine.context_length, engine.context_length)
    room = output_budget(len(prompt.token_ids), None, context)
    wanted = params.max_tokens
    return replace(params, max_tokens=room if wanted is None else min(wanted, room))


@dataclass(frozen=True, slots=True)
class Thinking:
    """What ``think`` asks for: whether the reasoning is sent, skipped, or has a budget."""

    show: bool  # sent apart, in ``thinking``
    skip: bool = False  # false: the model gets an empty thinking block and answers at once
    level: ThinkLevel | None = None  # low|medium|high: reasoning_effort's budgets

    def params(self, params: SamplingParams) -> SamplingParams:
        """A level's reasoning budget (``EFFORT_BUDGETS``), else the model's default one."""
        budget = reasoning_budget(None, self.level, params.max_reasoning_tokens)
        return replace(params, max_reasoning_tokens=budget)


def thinking(think: bool | ThinkLevel | None) -> Thinking:
    """``think``: unset or true sends the reasoning apart; false skips it, as
    ``reasoning_effort: "none"`` does; a level bounds it, as ``reasoning_effort`` does."""
    if think is False:
        return Thinking(show=False, skip=True)
    return Thinking(show=True, level=think if isinstance(think, str) else None)


# ---- responses ---------------------------------------------------------------------------


class Timer:
    """Ollama's durations in nanoseconds: the prompt until the first output, then the rest."""

    def __init__(self) -> None:
        self.start = time.perf_counter_ns()
        self.first: int | None = None

    def output(self) -> None:
        if self.first is None:
            self.first = time.perf_counter_ns()

    def stats(self, prompt_tokens: int, eval_tokens: int) -> dict[str, int]:
        end = time.perf_counter_ns()
        first = self.first if self.first is not None else end
        return {
            "total_duration": end - self.start,
            "load_duration": 0,  # the model is loaded once, at start-up
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": first - self.start,
            "eval_count": eval_tokens,
            "eval_duration": end - first,
        }


def done_reason(finish_reason: str | None) -> str:
    """Ollama's ``done_reason``: ``stop`` (also after tool calls, as Ollama says) and ``length``
    as is, r1serve's others by name."""
    if finish_reason is None or finish_reason == "tool_calls":
        return "stop"
    return finish_reason
