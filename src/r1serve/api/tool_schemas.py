"""Wire types of tool calls and structured output on ``/v1/chat/completions`` (OpenAI shapes)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from r1serve.text import check_unicode

MAX_TOOLS = 128
MAX_SCHEMA_CHARS = 256_000
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


def _check_schema_size(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"a JSON schema is at most {MAX_SCHEMA_CHARS} characters")
    return value


class FunctionDefinition(_Wire):
    name: FunctionName
    description: str | None = Field(None, max_length=16_384)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _size = field_validator("parameters")(_check_schema_size)


class ToolDefinition(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName_(_Wire):
    name: FunctionName


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: FunctionName_


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolOptions(_Wire):
    """The tools of a stored conversation (its settings), checked like a chat request's."""

    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _choice_names_a_tool(self) -> ToolOptions:
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or ()}
            if choice.function.name not in names:
                raise ValueError(f"tool_choice names {choice.function.name!r}, not one of tools")
        elif choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        return self


class FunctionCall(_Wire):
    name: str = Field(max_length=256)
    arguments: str | dict[str, Any] = "{}"

    @field_validator("arguments")
    @classmethod
    def _text(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str):
            check_unicode(value)
        return value

    def arguments_text(self) -> str:
        args = self.arguments
        return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


class ToolCallIn(_Wire):
    """A call an earlier assistant turn made, as the client sends it back."""

    id: str | None = Field(None, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class JsonSchemaFormat(_Wire):
    name: str | None = Field(None, max_length=256)
    description: str | None = None
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _size(cls, value: dict[str, Any] | bool | None) -> dict[str, Any] | bool | None:
        return value if isinstance(value, bool) else _check_schema_size(value)


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# ---- responses ----------------------------------------------------------------------------


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut
