"""Wire types of the Ollama-compatible API (``/api/chat``, ``/api/generate``…), as Ollama's
``docs/api.md`` describes them.

Requests follow the OpenAI schemas' rules (strict types, no NaN, capped counts, valid Unicode)
but keep Ollama's field names. Unknown top-level fields are accepted, as Ollama ignores them.
Responses are plain dicts built in ``api.ollama_mapping``: Ollama's shapes are loose, and the
NDJSON lines are written by hand for speed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from r1serve.api.schemas import MAX_MESSAGES
from r1serve.api.tool_schemas import MAX_SCHEMA_CHARS, MAX_TOOLS, ToolDefinition
from r1serve.generation.bounds import (
    MAX_TOKENS_CAP,
    MinP,
    NumPredict,
    Penalty,
    RepetitionPenaltyOrOff,
    Seed,
    Temperature,
    TopK,
    TopPOrOff,
    check_stops,
)
from r1serve.text import check_unicode

ThinkLevel = Literal["low", "medium", "high"]
MAX_IMAGES = 64


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


def _unicode(value: str | None) -> str | None:
    return value if value is None else check_unicode(value)


class Options(_Request):
    """``options``: the sampling fields r1serve runs; hints are accepted (see ``HINT_OPTIONS``)."""

    num_predict: NumPredict | None = None  # -1 (-2): no cap (fill the context)
    temperature: Temperature | None = None
    top_k: TopK | None = None
    top_p: TopPOrOff | None = None
    min_p: MinP | None = None
    seed: Seed | None = None
    stop: list[str] | None = None
    repeat_penalty: RepetitionPenaltyOrOff | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    num_ctx: Annotated[int, Field(ge=1, le=MAX_TOKENS_CAP)] | None = None
    # Sampling methods r1serve does not have: only their "off" values are accepted.
    typical_p: float | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    repeat_last_n: int | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_stops(value)
        return value


# Ollama treats these as hints about how to load or run the model (threads, GPU layers,
# batch sizes, memory mapping): r1serve decides those at start-up, so they are ignored.
HINT_OPTIONS = frozenset(
    {
        "num_keep", "num_batch", "num_gpu", "main_gpu", "num_thread", "numa", "low_vram",
        "f16_kv", "logits_all", "vocab_only", "use_mmap", "use_mlock", "embedding_only",
        "num_gqa", "penalize_newline",
    }
)  # fmt: skip


class ToolCallFunction(_Request):
    name: str = Field(max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Request):
    function: ToolCallFunction


class Message(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None  # an earlier reply's reasoning; never reaches the prompt
    images: list[str] | None = Field(None, max_length=MAX_IMAGES)
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_name: str | None = Field(None, max_length=256)

    _check = field_validator("content")(_unicode)


class _Generating(_Request):
    model: str = Field(min_length=1, max_length=512)
    stream: bool = True
    think: bool | ThinkLevel | None = None
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: str | int | float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str) and value not in ("", "json"):
            raise ValueError('format is "json" or a JSON schema object')
        if isinstance(value, dict) and len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"a JSON schema is at most {MAX_SCHEMA_CHARS} characters")
        return value


class ChatRequest(_Generating):
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)


class GenerateRequest(_Generating):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = Field(None, max_length=MAX_IMAGES)

    _check = field_validator("prompt", "system")(_unicode)


class ModelRequest(_Request):
    """``/api/show`` and ``/api/delete``; older clients send ``name`` instead of ``model``."""

    model: str | None = Field(None, min_length=1, max_length=512)
    name: str | None = Field(None, min_length=1, max_length=512)
    verbose: bool = False

    def model_name(self) -> str:
        name = self.model or self.name
        if not name:
            raise ValueError("model is required")
        return name


class PullRequest(ModelRequest):
    stream: bool = True
    insecure: bool = False


class EmbedRequest(_Request):
    model: str = Field(min_length=1, max_length=512)
