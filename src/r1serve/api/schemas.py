"""Wire types of the HTTP API (OpenAI's shapes), apart from engine and database types.

Requests are strict: "10" is not a number, NaN and Infinity are refused, and every count has
a cap, so bad input fails validation (400) instead of reaching the model. Unknown fields are
accepted and logged, so new SDK versions keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from r1serve.api.tool_schemas import (
    MAX_TOOLS,
    FunctionDefinition,
    NamedToolChoice,
    ResponseFormat,
    ToolCallIn,
    ToolCallOut,
    ToolChoice,
    ToolDefinition,
)
from r1serve.generation.bounds import (
    MAX_LOGIT_BIAS,
    MAX_N,
    MAX_STOP_TOKEN_IDS,
    Choices,
    LogitBias,
    MaxTokens,
    MinP,
    Penalty,
    ReasoningTokens,
    RepetitionPenalty,
    Seed,
    Temperature,
    TimeoutS,
    TopKOrDisabled,
    TopLogprobs,
    TopP,
    check_stops,
)
from r1serve.generation.sampling import SamplingRequest
from r1serve.text import check_unicode

MAX_MESSAGES = 4096


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
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=MAX_TOOLS)  # assistant turns
    tool_call_id: str | None = Field(None, max_length=256)  # tool results

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
    top_k: TopKOrDisabled | None = None  # -1 or 0: off
    min_p: MinP | None = None
    repetition_penalty: RepetitionPenalty | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None
    max_tokens: MaxTokens | None = None
    n: Choices = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, max_length=MAX_STOP_TOKEN_IDS
    )
    ignore_eos: bool = False
    logit_bias: dict[str, LogitBias] | None = None
    repetition_guard: bool = Field(
        False, description="End a reply that loops (one span repeated many times in a row)."
    )
    user: str | None = Field(None, max_length=512)
    timeout: TimeoutS | None = Field(
        None, description="Seconds this request may run; it ends with finish_reason 'timeout'."
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        check_stops([value] if isinstance(value, str) else (value or []))
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

    @field_validator("stream_options")
    @classmethod
    def _options_need_stream(
        cls, value: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_request(self) -> SamplingRequest:
        """The sampling this request asks of the generation layer."""
        return SamplingRequest(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            max_tokens=self.max_tokens,
            stop=self.stop_list(),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            logit_bias=dict(self.logit_bias or {}),
            logprobs=self.logprob_count(),
            max_reasoning_tokens=getattr(self, "max_reasoning_tokens", None),
            reasoning_effort=getattr(self, "reasoning_effort", None),
        )


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: MaxTokens | None = Field(
        None, description="Replaces max_tokens (OpenAI's newer name) when both are sent."
    )
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    max_reasoning_tokens: ReasoningTokens | None = Field(
        None,
        description="Most reasoning tokens; then the thinking ends and the answer follows.",
    )
    reasoning_effort: Literal["none", "low", "medium", "high"] | None = Field(
        None, description="none: no thinking; low/medium/high: budgets of 1024/4096/16384 tokens."
    )
    modalities: list[str] | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # OpenAI's deprecated names for tools and tool_choice
    functions: list[FunctionDefinition] | None = Field(None, max_length=MAX_TOOLS)
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("logprobs") is not True:
            raise ValueError("top_logprobs requires logprobs to be true")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and value != ["text"]:
            raise ValueError('this server only produces text: modalities must be ["text"]')
        return value

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.functions and not self.tools:
            self.tools = [ToolDefinition(function=f) for f in self.functions]
        if self.function_call is not None and self.tool_choice is None:
            call = self.function_call
            self.tool_choice = (
                call if isinstance(call, str) else NamedToolChoice.model_validate(
                    {"function": {"name": call.get("name")}}, strict=False
                )
            )  # fmt: skip
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or ()}
            if choice.function.name not in names:
                raise ValueError(f"tool_choice names {choice.function.name!r}, not one of tools")
        elif choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        fmt = self.response_format
        if (
            fmt is not None
            and fmt.type == "json_schema"
            and (fmt.json_schema is None or fmt.json_schema.schema_ is None)
        ):
            raise ValueError("response_format json_schema needs json_schema.schema")
        if self.max_completion_tokens is not None:
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
    model: str | None = Field(None, max_length=512, description="Served model id; default: it.")
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
    tool_calls: list[ToolCallOut] | None = None


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
    engine: str | None = None  # the backend serving it (transformers, llamacpp…)


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


class OllamaErrorResponse(BaseModel):
    """Ollama's error body: the message alone (``api.ollama_wire.OllamaErrorShape``)."""

    error: str


_ERRORS = (
    (400, "Bad input: wrong types, out of range, unsupported fields."),
    (401, "No valid key or login."),
    (403, "Not allowed: not an admin, a foreign Host, a cross-site request."),
    (404, "No such route, model or object (or not yours)."),
    (413, "The request body is over R1SERVE_MAX_BODY_BYTES."),
    (429, "A quota or the login throttle; see Retry-After."),
)


def error_responses(body: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The error answers every route may give, for the OpenAPI document, with ``body``."""
    return {code: {"model": body, "description": description} for code, description in _ERRORS}


ERROR_RESPONSES = error_responses(ErrorResponse)
"""OpenAI's error shape, which every route but Ollama's answers with."""
OLLAMA_ERROR_RESPONSES = error_responses(OllamaErrorResponse)

SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event; on /v1 its data is a JSON chunk, the last `[DONE]`.",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}
SSE_CONTENT: dict[str, Any] = {"text/event-stream": {"schema": SSE_EVENT}}
"""The stream a ``stream: true`` request gets instead of the JSON body."""


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    running: int
    waiting: int
