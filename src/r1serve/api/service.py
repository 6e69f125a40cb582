"""OpenAI's wire format over the generation layer: requests in, chat and text completions out.

``CompletionService`` is a ``Generation`` (``r1serve.generation``) that also speaks OpenAI: it
maps a ``ChatCompletionRequest`` or ``CompletionRequest`` onto prompts, sampling and choices, and
the whole choices onto OpenAI's response objects. Streaming responses are framed in ``api.sse``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from r1serve.api import tools
from r1serve.api.logprobs import TokenText, chat_logprobs, completion_logprobs
from r1serve.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionTokensDetails,
    GenerateResponse,
    UsageInfo,
)
from r1serve.engine.protocol import Prompt, SamplingParams, Usage
from r1serve.generation import REPETITION, Generation, Meter, Output, ReasoningFormat, collect

__all__ = ["REPETITION", "CompletionService", "Output", "ReasoningFormat"]


class CompletionService(Generation):
    """The generation layer of one engine, with OpenAI's requests and responses."""

    def chat_prompt(self, req: ChatCompletionRequest) -> Prompt:
        """The prompt of a chat request; ``reasoning_effort: "none"`` skips the thinking."""
        return self.render_chat(
            tools.chat_messages(req),
            tools=tools.offered_tools(req),
            skip_thinking=req.reasoning_effort == "none",
        )

    async def prepare_chat_request(self, req: ChatCompletionRequest) -> Prompt:
        """``chat_prompt`` off the event loop, after the size and admission checks."""
        chars = sum(len(m.text()) for m in req.messages)
        return await self.prompts.prepare(chars, lambda: self.chat_prompt(req))

    async def start_chat(
        self, req: ChatCompletionRequest, request_id: str, meter: Meter | None = None
    ) -> tuple[Prompt, AsyncIterator[Output]]:
        """The prompt and merged outputs of a chat request, tool calls and constraints applied."""
        prompt = await self.prepare_chat_request(req)
        params = replace(self.sampling(req), constraint=tools.chat_constraint(req, prompt))
        outputs = await self.start(
            request_id,
            [prompt],
            params,
            n=req.n,
            timeout=req.timeout,
            repetition_guard=req.repetition_guard,
            meter=meter,
        )
        setup = tools.tool_setup(req, prompt)
        if setup is not None:
            outputs = tools.with_tool_calls(outputs, setup, req.n)
        return prompt, outputs

    async def start_completion(
        self, req: CompletionRequest, request_id: str, meter: Meter | None = None
    ) -> tuple[list[Prompt], AsyncIterator[Output]]:
        """The prompts and merged outputs of a text completion (no reasoning split)."""
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        prompts = await self.prepare_texts(texts)
        outputs = await self.start(
            request_id,
            prompts,
            self.sampling(req),
            n=req.n,
            timeout=req.timeout,
            split_reasoning=False,
            repetition_guard=req.repetition_guard,
            meter=meter,
        )
        return prompts, outputs

    async def chat(
        self, req: ChatCompletionRequest, request_id: str, meter: Meter | None = None
    ) -> ChatCompletionResponse:
        model = self.check_model(req.model)
        prompt, outputs = await self.start_chat(req, request_id, meter)
        done = await collect(outputs, req.n)
        text = TokenText(self.engine.tokenizer)
        choices = []
        for i, c in enumerate(done.choices):
            calls = tools.whole_calls(c.tool_calls)
            message = AssistantMessage(
                content=c.text or (None if calls else ""),
                reasoning_content=c.thinking or None,
                reasoning=c.thinking or None,
                tool_calls=calls or None,
            )
            choices.append(
                ChatChoice(
                    index=i,
                    message=message,
                    finish_reason=c.finish_reason,
                    logprobs=chat_logprobs(c.logprobs, text) if req.logprobs else None,
                    stop_reason=c.stop_reason if c.stop_reason == REPETITION else None,
                )
            )
        return ChatCompletionResponse(
            id=request_id,
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=usage_info(_prompt_counted(done.usage, prompt)),
        )

    async def completion(
        self, req: CompletionRequest, request_id: str, meter: Meter | None = None
    ) -> CompletionResponse:
        model = self.check_model(req.model)
        prompts, outputs = await self.start_completion(req, request_id, meter)
        done = await collect(outputs, len(prompts) * req.n, lambda index: index // req.n)
        token_text = TokenText(self.engine.tokenizer)
        choices = []
        for i, c in enumerate(done.choices):
            text, offset = c.text, 0
            if req.echo:
                offset = len(prompts[i // req.n].text)
                text = prompts[i // req.n].text + text
            logprobs = None
            if req.logprobs is not None:
                logprobs = completion_logprobs(c.logprobs, token_text, offset)
            choices.append(
                CompletionChoice(
                    index=i,
                    text=text,
                    finish_reason=c.finish_reason,
                    logprobs=logprobs,
                    stop_reason=c.stop_reason if c.stop_reason == REPETITION else None,
                )
            )
        return CompletionResponse(
            id=request_id,
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=usage_info(done.usage),
        )

    async def simple_prompt(self, prompt_text: str) -> Prompt:
        """The prompt of the simple endpoints: one user message, chat template applied."""
        messages = [{"role": "user", "content": prompt_text}]
        return await self.prepare_chat(messages, chars=len(prompt_text), param="prompt")

    async def generate(
        self,
        prompt_text: str,
        params: SamplingParams,
        request_id: str,
        meter: Meter | None = None,
    ) -> GenerateResponse:
        """The simple ``POST /generate`` endpoint: chat template applied, answer apart."""
        prompt = await self.simple_prompt(prompt_text)
        done = await self.run(request_id, [prompt], params, meter=meter)
        [choice] = done.choices
        return GenerateResponse(
            response=choice.text,
            reasoning=choice.thinking or None,
            finish_reason=choice.finish_reason,
            usage=usage_info(_prompt_counted(done.usage, prompt)),
        )


def _prompt_counted(usage: Usage, prompt: Prompt) -> Usage:
    """The engine's prompt count where it gave one (an upstream's own, where r1serve only
    estimated), else r1serve's."""
    return usage if usage.prompt_tokens else replace(usage, prompt_tokens=len(prompt.token_ids))


def usage_info(usage: Usage) -> UsageInfo:
    """OpenAI's usage object."""
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens),
    )
