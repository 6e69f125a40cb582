"""``Generation``: prompts, sampling and one or ``n`` choices against one served engine.

Every wire format calls this and only maps: the OpenAI routes (``api.service``), Ollama's
(``api.routes.ollama``), the simple endpoints and the stored conversations' replies. It renders
prompts off the event loop (``PromptWorkers``), turns a ``SamplingRequest`` into the engine's
parameters, submits every choice (errors raise before anything streams), and merges their
outputs, split into reasoning and answer. Usage records go to the ``Meter`` the caller passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any, Literal

from r1serve.engine.protocol import (
    DeltaStream,
    Engine,
    GenerationRequest,
    Prompt,
    PromptOrigin,
    SamplingParams,
)
from r1serve.engine.text.reasoning import ReasoningSplitter
from r1serve.errors import NotFoundError, RequestError
from r1serve.generation.metering import Meter
from r1serve.generation.outputs import Output, OutputSplitter, RawOutput, merge
from r1serve.generation.prompts import PromptWorkers
from r1serve.generation.reasoning import skip_reasoning
from r1serve.generation.sampling import AsksSampling, SamplingRequest, sampling_params
from r1serve.generation.usage import Completed, collect

ReasoningFormat = Literal["split", "raw"]
Messages = list[dict[str, Any]]


class Generation:
    """Validates, prompts and runs requests against one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        reasoning_format: ReasoningFormat = "split",
        default_sampling: dict[str, Any] | None = None,
        default_timeout_s: float | None = None,
        prompt_workers: int = 2,
        max_prompt_chars: int | None = None,
    ) -> None:
        self.engine = engine
        self.prompts = PromptWorkers(engine, threads=prompt_workers, max_chars=max_prompt_chars)
        self.reasoning_format = reasoning_format
        self.default_sampling = dict(default_sampling or {})
        self.default_timeout_s = default_timeout_s

    # ---- building requests --------------------------------------------------------------

    def check_model(self, name: str | None) -> str:
        """The served model id; 404 for any other name."""
        served = self.engine.model_name
        if name is not None and name != served:
            raise NotFoundError(
                f"model {name[:200]!r} is not served here; this server serves {served!r}",
                param="model",
                code="model_not_found",
            )
        return served

    def sampling(self, req: SamplingRequest | AsksSampling) -> SamplingParams:
        """Engine sampling parameters from a request, with the model's defaults."""
        asked = req.sampling_request() if isinstance(req, AsksSampling) else req
        return sampling_params(asked, self.default_sampling, self.engine.tokenizer.vocab_size)

    def render_chat(
        self, messages: Messages, *, tools: Messages | None = None, skip_thinking: bool = False
    ) -> Prompt:
        """The chat template over ``messages``; ``skip_thinking``: an empty thinking block."""
        prompt = self.engine.render_chat(messages, add_generation_prompt=True, tools=tools)
        return skip_reasoning(prompt, self.engine.tokenizer) if skip_thinking else prompt

    async def prepare_chat(
        self,
        messages: Messages,
        *,
        tools: Messages | None = None,
        skip_thinking: bool = False,
        chars: int | None = None,
        param: str = "messages",
    ) -> Prompt:
        """``render_chat`` off the event loop; ``chars``: the size the checks count."""
        if chars is None:
            chars = sum(len(str(m.get("content") or "")) for m in messages)
        build = lambda: self.render_chat(messages, tools=tools, skip_thinking=skip_thinking)  # noqa: E731
        return await self.prompts.prepare(chars, build, param=param)

    async def prepare_texts(self, texts: Sequence[str]) -> list[Prompt]:
        """``text_prompt`` of each text off the event loop, after the same checks."""
        chars = sum(len(t) for t in texts)
        build = lambda: [self.text_prompt(t) for t in texts]  # noqa: E731
        return await self.prompts.prepare(chars, build, param="prompt")

    def text_prompt(self, text: str) -> Prompt:
        """Raw text as a prompt (no chat template); control tokens in it are parsed."""
        ids = self.engine.tokenizer.encode(text, add_special_tokens=True)
        if not ids:
            raise RequestError("prompt is empty after tokenization", param="prompt")
        return Prompt(token_ids=tuple(ids), text=text, origin=PromptOrigin(text=text))

    def _requests(
        self,
        base_id: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        n: int,
        timeout: float | None,
    ) -> list[GenerationRequest]:
        out = []
        limits = [t for t in (timeout, self.default_timeout_s) if t]
        timeout = min(limits) if limits else None
        for p_index, prompt in enumerate(prompts):
            for i in range(n):
                seed = params.seed
                if seed is not None and i:
                    seed = (seed + i) % 2**64  # n choices with one seed must still differ
                out.append(
                    GenerationRequest(
                        request_id=f"{base_id}-{p_index * n + i}",
                        prompt_token_ids=prompt.token_ids,
                        params=replace(params, seed=seed),
                        timeout_s=timeout,
                        origin=prompt.origin,
                    )
                )
        return out

    def _splitter(self, prompt: Prompt, split_reasoning: bool) -> OutputSplitter:
        if not split_reasoning:
            return RawOutput("")
        if self.reasoning_format == "raw":
            # Keep the output well-formed: the template already opened the block.
            return RawOutput("<think>\n" if prompt.opens_reasoning else "")
        return ReasoningSplitter(prompt.opens_reasoning)

    # ---- running ------------------------------------------------------------------------

    async def start(
        self,
        base_id: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        n: int = 1,
        timeout: float | None = None,
        split_reasoning: bool = True,
        repetition_guard: bool = False,
        meter: Meter | None = None,
    ) -> AsyncIterator[Output]:
        """Submit every choice now (errors raise here) and merge their outputs.

        Choice ``i`` of prompt ``p`` has index ``p * n + i``. With ``meter`` the outputs are
        watched by it (usage recorded when they end).
        """
        requests = self._requests(base_id, prompts, params, n, timeout)
        streams: list[DeltaStream] = []
        try:
            for request in requests:
                streams.append(await self.engine.submit(request))
        except BaseException:
            for stream in streams:
                await stream.aclose()
            raise
        splitters = [self._splitter(p, split_reasoning) for p in prompts for _ in range(n)]
        prompt_lens = [len(r.prompt_token_ids) for r in requests]
        outputs = merge(streams, splitters, prompt_lens, repetition_guard)
        if meter is None:
            return outputs
        return meter.watch(
            outputs,
            prompt_lens=[len(prompt.token_ids) for prompt in prompts],
            n=n,
            model=self.engine.model_name,
        )

    async def run(
        self,
        base_id: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        n: int = 1,
        timeout: float | None = None,
        split_reasoning: bool = True,
        repetition_guard: bool = False,
        meter: Meter | None = None,
    ) -> Completed:
        """``start``, then every choice whole; a prompt shared by its ``n`` choices counts once."""
        outputs = await self.start(
            base_id,
            prompts,
            params,
            n=n,
            timeout=timeout,
            split_reasoning=split_reasoning,
            repetition_guard=repetition_guard,
            meter=meter,
        )
        return await collect(outputs, len(prompts) * n, lambda index: index // n)
