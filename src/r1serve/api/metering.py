"""Quotas before generation, usage after it, around every generating endpoint.

``admit_generation`` (a route dependency) checks the caller's quotas and key scope off the event
loop, then marks the request as metered. ``MeteredCompletionService.start`` wraps the merged
outputs of a metered request: it counts tokens as they pass and, when the response ends (done,
failed, or cancelled), hands one usage event to the background writer. Nothing on the token path
waits for the database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request

from r1serve.api.access import AccessWatch, revocable
from r1serve.api.security import Accounts, Caller
from r1serve.api.service import CompletionService, Output
from r1serve.auth import Principal, UsageEvent, UsageRecorder
from r1serve.engine.protocol import Prompt, SamplingParams


@dataclass(frozen=True, slots=True)
class MeteredRequest:
    """Who asked, through which endpoint, and when admission passed."""

    principal: Principal
    endpoint: str
    started: float  # time.monotonic()


# Set by ``admit_generation`` in the request's task; read by ``start`` in the same context.
_metered: ContextVar[MeteredRequest | None] = ContextVar("r1serve_metered", default=None)


async def admit_generation(request: Request, caller: Caller, accounts: Accounts) -> None:
    """429 over a quota, 403 for a key scoped to other models; else meter this request.

    With several models the route checks the scope of the one it picks (``served.service_for``);
    with one, the check comes first, as before there could be several."""
    services = request.app.state.services
    if len(services) == 1:
        service: CompletionService = services.default
        caller.require_model(service.engine.model_name)
    await anyio.to_thread.run_sync(accounts.quotas.admit, caller)
    # The route's template, so usage groups by endpoint rather than by conversation id.
    endpoint = getattr(request.scope.get("route"), "path", None) or request.url.path
    _metered.set(MeteredRequest(caller, endpoint, time.monotonic()))


Admitted = Depends(admit_generation)
AdmittedCaller = Annotated[None, Admitted]


class MeteredCompletionService(CompletionService):
    """``CompletionService`` whose metered requests record their usage when they end."""

    def __init__(
        self,
        *args: Any,
        recorder: Callable[[], UsageRecorder],
        access: Callable[[], AccessWatch] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = recorder
        self._access = access

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
    ) -> AsyncIterator[Output]:
        """As ``CompletionService.start``; usage is recorded when the outputs end, and the
        outputs end with AccessRevokedError once the caller's access does."""
        outputs = await super().start(
            base_id,
            prompts,
            params,
            n=n,
            timeout=timeout,
            split_reasoning=split_reasoning,
            repetition_guard=repetition_guard,
        )
        metered = _metered.get()
        if metered is None:
            return outputs
        _metered.set(None)  # one request, one record
        counted = _counted(
            outputs,
            metered,
            [len(prompt.token_ids) for prompt in prompts],
            n,
            self.engine.model_name,
            self._recorder(),
        )
        if self._access is None:
            return counted
        # Outside the counter: a revocation cancels it mid-read, so usage says "cancelled".
        return revocable(counted, self._access().lease(metered.principal))


async def _counted(
    outputs: AsyncIterator[Output],
    metered: MeteredRequest,
    prompt_lens: list[int],
    n: int,
    model: str,
    recorder: UsageRecorder,
) -> AsyncIterator[Output]:
    """Pass outputs through, counting completion tokens; record usage however it ends.

    A prompt counts as the engine's final usage says where it says (an upstream's own count,
    where r1serve only estimated it), else as r1serve counted it; once for its n choices."""
    completion_tokens = 0
    finishes: list[str] = []
    status = "cancelled"
    try:
        async for output in outputs:
            completion_tokens += output.tokens
            if output.finish_reason is not None:
                finishes.append(output.finish_reason)
            if output.usage is not None and output.index // n < len(prompt_lens):
                prompt_lens[output.index // n] = output.usage.prompt_tokens
            yield output
        status = _status(finishes)
    except Exception:
        status = "error"
        raise
    finally:
        close = getattr(outputs, "aclose", None)
        if close is not None:
            await close()
        recorder.record(
            UsageEvent(
                user_id=metered.principal.user_id,
                api_key_id=metered.principal.api_key_id,
                model=model,
                endpoint=metered.endpoint,
                prompt_tokens=sum(prompt_lens),
                completion_tokens=completion_tokens,
                latency_ms=int((time.monotonic() - metered.started) * 1000),
                status=status,
            )
        )


def _status(finishes: list[str]) -> str:
    """One word for the request: the finish reason all choices share, else the worst one."""
    for worst in ("error", "abort", "timeout", "length"):
        if worst in finishes:
            return worst
    return "stop" if finishes else "cancelled"
