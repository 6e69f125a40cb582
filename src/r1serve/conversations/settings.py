"""The sampling settings a conversation keeps for its replies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from r1serve.generation.bounds import (
    MaxTokens,
    MinP,
    ReasoningTokens,
    RepetitionPenalty,
    Seed,
    Temperature,
    TopK,
    TopP,
)

MAX_TOOLS = 128


class ReplySettings(BaseModel):
    """Sampling settings of a conversation; empty fields take the model's defaults."""

    # Strict: "10" is not a number, NaN is refused, a misspelled field is an error.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = Field(None, description="0: off.")
    min_p: MinP | None = None
    repetition_penalty: RepetitionPenalty | None = None
    max_tokens: MaxTokens | None = Field(
        None, description="Most tokens per reply; default: the room left."
    )
    seed: Seed | None = None
    ignore_eos: bool | None = Field(
        None, description="Keep generating after the end-of-text token (max_tokens ends it)."
    )
    max_reasoning_tokens: ReasoningTokens | None = Field(
        None, description="Most thinking tokens; then the answer."
    )
    reasoning_effort: Literal["none", "low", "medium", "high"] | None = Field(
        None, description="none: no thinking; low/medium/high: 1024/4096/16384 thinking tokens."
    )
    repetition_guard: bool | None = Field(
        None, description="End a reply stuck in a loop; default: on."
    )

    def stored(self) -> dict[str, object]:
        """The set fields, as stored with the conversation."""
        return self.model_dump(exclude_none=True)


class ConversationSettings(ReplySettings):
    """A conversation's settings: its reply settings, and the tools its replies may call.

    The tools are kept in OpenAI's shapes; the HTTP layer checks them (``api.tool_schemas``)
    when they are set and again before a reply uses them (an import may carry anything).
    """

    tools: list[dict[str, Any]] | None = Field(
        None, max_length=MAX_TOOLS, description="OpenAI tool definitions the replies may call."
    )
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = Field(
        None, description="auto (default), none, required, or {type, function: {name}}."
    )
    parallel_tool_calls: bool | None = Field(None, description="false: one call per reply.")
