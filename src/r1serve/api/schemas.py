"""Wire types of the HTTP API (OpenAI's shapes), apart from engine and database types.

Requests are strict: "10" is not a number, NaN and Infinity are refused, and every count has
a cap, so bad input fails validation (400) instead of reaching the model. Unknown fields are
accepted and logged, so new SDK versions keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from r1serve.text import check_unicode

MAX_MESSAGES = 4096
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 1024
MAX_LOGIT_BIAS = 1024
MAX_N = 8
MAX_TOKENS_CAP = 2**31 - 1

Temperature = Annotated[float, Field(ge=0.0, le=100.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_CAP)]
Seed = Annotated[int, Field(ge=-(2**63), lt=2**64)]
TopLogprobs = Annotated[int, Field(ge=0, le=20)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class StreamOptions(_Request):
    include_usage: bool = False


class TextPart(_Request):
    type: Literal["text"]
    text: str

    _check = field_validator("text")(check_unicode)


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)
    # Earlier assistant turns may carry these back; they never reach the prompt.
    reasoning_content: str | None = None
    reasoning: str | None = None

    @field_validator("content")
    @classmethod
    def _content_text(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        if isinstance(value, str):
            check_unicode(value)
        return value

    def text(self) -> str:
        """The message content as one string."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class SamplingFields(_Request):
    """Sampling fields shared by chat and text completions."""

    model: str | None = Field(None, max_length=512, description="Served model id; default: it.")
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Field(ge=-1, le=1_000_000)] | None = None  # -1 or 0: off
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None
    max_tokens: MaxTokens | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(None, max_length=64)
    ignore_eos: bool = False
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    repetition_guard: bool = Field(
        False, description="End a reply that loops (one span repeated many times in a row)."
    )
    user: str | None = Field(None, max_length=512)
    timeout: Annotated[float, Field(gt=0.0, le=86_400.0)] | None = Field(
        None, description="Seconds this request may run; it ends with finish_reason 'timeout'."
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
        for stop in stops:
            if not stop:
                raise ValueError("stop strings must not be empty")
            if len(stop) > MAX_STOP_LENGTH:
                raise ValueError(f"stop strings are at most {MAX_STOP_LENGTH} characters")
            check_unicode(stop)
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias has at most {MAX_LOGIT_BIAS} entries")
        for key in value or {}:
            if not key.isascii() or not key.isdigit() or len(key) > 9:
                raise ValueError(f"logit_bias keys are token ids, got {key[:20]!r}")
        return value

    def logprob_count(self) -> int | None:
        """Alternatives per token for the log probabilities; None when not asked for."""
        return None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: MaxTokens | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    max_reasoning_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS_CAP)] | None = Field(
        None,
        description="Most reasoning tokens; then the thinking ends and the answer follows.",
    )
    reasoning_effort: Literal["none", "low", "medium", "high"] | None = Field(
        None, description="none: no thinking; low/medium/high: budgets of 1024/4096/16384 tokens."
    )

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _unsupported(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tools:
            raise ValueError("tool calling is not supported by this server")
        if self.tool_choice not in (None, "none", "auto"):
            raise ValueError("tool calling is not supported by this server")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported")
        if self.max_completion_tokens is not None and self.max_tokens is None:
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(description="Raw prompt text; no chat template is applied.")
    echo: bool = False
    suffix: str | None = None
    logprobs: TopLogprobs | None = None

    def logprob_count(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not 1 <= len(prompts) <= MAX_N:
            raise ValueError(f"prompt must be a string or a list of 1 to {MAX_N} strings")
        for prompt in prompts:
            check_unicode(prompt)
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix is not supported by this server")
        return value


class GenerateRequest(_Request):
    """Body of the simple ``POST /generate`` endpoint."""

    prompt: str = Field(min_length=1)
    max_length: MaxTokens | None = Field(
        None, description="Most new tokens to generate (not counting the prompt)."
    )
    temperature: Temperature | None = None
    top_p: TopP | None = None

    _check = field_validator("prompt")(check_unicode)


# ---- responses ----------------------------------------------------------------------------


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None
    stop_reason: str | int | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None
    stop_reason: str | int | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class GenerateResponse(BaseModel):
    response: str = Field(description="The answer (without the reasoning).")
    reasoning: str | None = Field(None, description="The model's reasoning, if it gave any.")
    finish_reason: str | None
    usage: UsageInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "r1serve"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    running: int
    waiting: int
