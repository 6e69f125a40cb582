"""Chat templates: render messages with the model's Jinja template into a tokenized ``Prompt``.

Templates come from model files or a ``--chat-template`` file, so they are untrusted code: they run
in Jinja's immutable sandbox with the same extras transformers offers (``raise_exception``,
``strftime_now``, ``tojson``, loop controls, the ``{% generation %}`` tag).

Message contents are user text and must never become control tokens. Each content is rendered as
a unique placeholder; the template text between placeholders is tokenized with ``encode`` (control
tokens parsed) and each content with ``encode_plain``. The spliced text is checked against a
normal render; a template that rewrites contents falls back to the normal render, which is only
allowed when the contents bring no added-token string into it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from r1serve.engine.protocol import Prompt, Tokenizer
from r1serve.engine.text.tool_format import ToolSupport, prepare_messages
from r1serve.errors import ConfigError, RequestError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_REASONING_FIELDS = ("reasoning_content", "reasoning")
# OpenAI's newer name for the system role; templates only know "system".
_ROLE_ALIASES = {"developer": "system"}


def strip_reasoning(text: str) -> str:
    """An assistant reply without its leading ``<think>…</think>`` (or ``…</think>``) reasoning."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        end = stripped.find(THINK_CLOSE)
        # No closing tag: the reply was cut off while still reasoning, so it has no answer.
        return "" if end == -1 else stripped[end + len(THINK_CLOSE) :].lstrip()
    end = text.find(THINK_CLOSE)
    if end != -1 and THINK_OPEN not in text[:end]:
        # The template opened <think> in the prompt, so the reply starts inside the reasoning.
        return text[end + len(THINK_CLOSE) :].lstrip()
    return text


def ends_inside_reasoning(text: str) -> bool:
    """Whether the text opens ``<think>`` without closing it."""
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` (transformers' assistant-mask tag): the body."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's own class attribute)

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        body: list[nodes.Node] = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return body


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: object,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Like transformers' filter: no HTML escaping (Jinja's default tojson escapes < > & ').
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def compile_template(source: str) -> jinja2.Template:
    """Compile a chat template in the sandbox; a syntax error is a ConfigError."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTag],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"chat template has a syntax error on line {exc.lineno}: {exc}") from exc


class ChatFormatter:
    """Renders chat messages into a tokenized prompt; user text never becomes control tokens."""

    def __init__(
        self,
        template: str,
        tokenizer: Tokenizer,
        *,
        bos_token: str | None,
        eos_token: str | None,
    ) -> None:
        self._template = compile_template(template)
        self.source = template  # shown by Ollama's /api/show
        self.tool_support = ToolSupport.of_template(template)
        self._tokenizer = tokenizer
        self._bos_token = bos_token
        self._eos_token = eos_token
        added: frozenset[str] = getattr(tokenizer, "added_tokens", frozenset())
        self._added_tokens = sorted(added, key=len, reverse=True)

    def render(
        self,
        messages: Sequence[Mapping[str, object]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: object,
    ) -> Prompt:
        """Apply the template and tokenize the result (``tools``: see ``tool_format``)."""
        tool_format = None
        if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            messages, variables = prepare_messages(messages, tools, self.tool_support)
            template_kwargs = {**template_kwargs, **variables}
            tool_format = self.tool_support.format if tools else None
        self._refuse_added_tokens(template_kwargs)
        prepared = _prepare_messages(messages, keep_last_reasoning=not add_generation_prompt)
        # Only contents are spliced in as plain text; tool calls and names go in the template.
        self._refuse_added_tokens([_template_fields(message) for message in prepared])
        prompt = self._render(prepared, add_generation_prompt, template_kwargs)
        return replace(prompt, tool_format=tool_format) if tool_format else prompt

    def _render(
        self,
        prepared: list[dict[str, object]],
        add_generation_prompt: bool,
        template_kwargs: Mapping[str, object],
    ) -> Prompt:
        contents = [message.get("content") for message in prepared]
        marker = _unused_marker(contents)
        placeholders = [
            {**message, "content": f"\ue000{marker}{i}\ue001"}
            if isinstance(message.get("content"), str)
            else message
            for i, message in enumerate(prepared)
        ]
        render = self._renderer(add_generation_prompt, template_kwargs)
        text = render(prepared)
        try:
            template_only = render(placeholders)
        except RequestError:  # a template that needs the real contents (e.g. parses them)
            self._refuse_added_tokens(contents)
            return self._encoded(text, opens_reasoning=ends_inside_reasoning(text))
        pieces = re.split(f"\ue000{marker}(\\d+)\ue001", template_only)
        # re.split alternates: template text, content index, template text, ...
        spliced = "".join(
            piece if n % 2 == 0 else str(contents[int(piece)]) for n, piece in enumerate(pieces)
        )
        if spliced == text:
            return self._splice(pieces, contents, text)
        return self._fallback(text, template_only)

    def _renderer(
        self, add_generation_prompt: bool, template_kwargs: Mapping[str, object]
    ) -> Callable[[list[dict[str, object]]], str]:
        variables: dict[str, object] = {
            **template_kwargs,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self._bos_token or "",
            "eos_token": self._eos_token or "",
        }

        def render(messages: list[dict[str, object]]) -> str:
            try:
                return self._template.render({**variables, "messages": messages})
            except Exception as exc:  # template code may raise anything; it is the request's fault
                raise RequestError(f"chat template error: {exc}", param="messages") from exc

        return render

    def _splice(self, pieces: list[str], contents: list[object], text: str) -> Prompt:
        ids: list[int] = []
        for n, piece in enumerate(pieces):
            if n % 2 == 0:
                ids.extend(self._tokenizer.encode(piece) if piece else ())
            else:
                ids.extend(self._tokenizer.encode_plain(str(contents[int(piece)])))
        # Only the template text after the last content can open the model's reasoning.
        return Prompt(tuple(ids), text, opens_reasoning=ends_inside_reasoning(pieces[-1]))

    def _fallback(self, text: str, template_only: str) -> Prompt:
        """A normal render, allowed only if no content put an added-token string into it."""
        # template_only is the render with placeholders for contents: an added token found more
        # often in the real render than there came from a message's content.
        for token in self._added_tokens:
            if text.count(token) > template_only.count(token):
                raise RequestError(
                    f"message content contains {token!r}, which this model's chat template "
                    "would turn into a control token",
                    param="messages",
                )
        return self._encoded(text, opens_reasoning=ends_inside_reasoning(text))

    def _encoded(self, text: str, *, opens_reasoning: bool) -> Prompt:
        return Prompt(tuple(self._tokenizer.encode(text)), text, opens_reasoning=opens_reasoning)

    def _refuse_added_tokens(self, value: object) -> None:
        """RequestError if any string in value (nested lists and dicts too) holds an added token."""
        if isinstance(value, str):
            for token in self._added_tokens:
                if token in value:
                    raise RequestError(
                        f"the request contains {token!r}, which this model's chat template would "
                        "turn into a control token",
                        param="messages",
                    )
        elif isinstance(value, Mapping):
            for item in value.values():
                self._refuse_added_tokens(item)
        elif isinstance(value, list | tuple):
            for item in value:
                self._refuse_added_tokens(item)


def _prepare_messages(
    messages: Sequence[Mapping[str, object]], *, keep_last_reasoning: bool
) -> list[dict[str, object]]:
    """Plain dicts with text contents; earlier assistant turns lose their reasoning."""
    prepared: list[dict[str, object]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{index}] needs a string 'role'", param="messages")
        item = dict(message)
        item["role"] = _ROLE_ALIASES.get(str(item["role"]), item["role"])
        item["content"] = _content_text(message.get("content"), index)
        is_continued = keep_last_reasoning and index == len(messages) - 1
        if item["role"] == "assistant" and not is_continued:
            for field in _REASONING_FIELDS:
                item.pop(field, None)
            if isinstance(item["content"], str):
                item["content"] = strip_reasoning(item["content"])
        prepared.append(item)
    return prepared


def _template_fields(message: Mapping[str, object]) -> dict[str, object]:
    """A message's strings that the template renders as its own text (not the content)."""
    skip = ("role", "content", *_REASONING_FIELDS)
    return {key: value for key, value in message.items() if key not in skip}


def _content_text(content: object, index: int) -> str | None:
    """A message's content as text: a string, None, or OpenAI text parts joined by newlines."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(
            f"messages[{index}].content must be a string or a list of parts", param="messages"
        )
    texts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise RequestError(
                f"messages[{index}].content: part type {kind!r} is not supported (text only)",
                param="messages",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise RequestError(f"messages[{index}].content: a text part needs 'text'")
        texts.append(text)
    return "\n".join(texts)


def _unused_marker(contents: Sequence[object]) -> str:
    """A random marker that no content contains, so placeholders cannot be forged."""
    while True:
        marker = secrets.token_hex(6)
        if not any(isinstance(c, str) and marker in c for c in contents):
            return marker
