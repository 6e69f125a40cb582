"""Quotas before generation, usage after it, around every generating endpoint.

``admit_generation`` (a route dependency) checks the caller's quotas and key scope off the event
loop and gives the route a ``MeteredRequest``: the route passes it to the generation layer
(``Generation.start(..., meter=...)``), which hands it the merged outputs. It counts tokens as
they pass and, when the response ends (done, failed, or cancelled), hands one usage event to the
background writer; it also ends the outputs once the caller's access does. Nothing on the token
path waits for the database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from r1serve.api.access import AccessWatch, revocable
from r1serve.api.security import Accounts, Caller
from r1serve.auth import Principal, UsageEvent, UsageRecorder
from r1serve.generation import Generation, Output, UsageTotal


@dataclass(slots=True)
class MeteredRequest:
    """Who asked, through which endpoint, and when admission passed; a ``generation.Meter``."""

    principal: Principal
    endpoint: str
    started: float  # time.monotonic()
    recorder: UsageRecorder
    access: AccessWatch | None = None
    watched: bool = field(default=False)  # one request, one usage record

    def watch(
        self, outputs: AsyncIterator[Output], *, prompt_lens: Sequence[int], n: int, model: str
    ) -> AsyncIterator[Output]:
        """``outputs`` counted (usage recorded however they end) and ended with
        AccessRevokedError once the caller's access does."""
        if self.watched:
            return outputs
        self.watched = True
        counted = _counted(outputs, self, prompt_lens, n, model)
        if self.access is None:
            return counted
        # Outside the counter: a revocation cancels it mid-read, so usage says "cancelled".
        return revocable(counted, self.access.lease(self.principal))


async def admit_generation(request: Request, caller: Caller, accounts: Accounts) -> MeteredRequest:
    """429 over a quota, 403 for a key scoped to other models; else this request's meter.

    With several models the route checks the scope of the one it picks (``served.service_for``);
    with one, the check comes first, as before there could be several."""
    services = request.app.state.services
    if len(services) == 1:
        service: Generation = services.default
        caller.require_model(service.engine.model_name)
    await anyio.to_thread.run_sync(accounts.quotas.admit, caller)
    # The route's template, so usage groups by endpoint rather than by conversation id.
    endpoint = getattr(request.scope.get("route"), "path", None) or request.url.path
    access: AccessWatch | None = getattr(request.app.state, "access", None)
    return MeteredRequest(caller, endpoint, time.monotonic(), accounts.usage, access)


Admitted = Depends(admit_generation)
Metered = Annotated[MeteredRequest, Admitted]


async def _counted(
    outputs: AsyncIterator[Output],
    metered: MeteredRequest,
    prompt_lens: Sequence[int],
    n: int,
    model: str,
) -> AsyncIterator[Output]:
    """Pass outputs through, counting completion tokens; record usage however it ends.

    A prompt counts as the engine's final usage says where it says (an upstream's own count,
    where r1serve only estimated it), else as r1serve counted it; once for its n choices."""
    total = UsageTotal(lambda index: index // n)
    status = "cancelled"
    try:
        async for output in outputs:
            total.add(output)
            yield output
        status = total.status()
    except Exception:
        status = "error"
        raise
    finally:
        close = getattr(outputs, "aclose", None)
        if close is not None:
            await close()
        metered.recorder.record(
            UsageEvent(
                user_id=metered.principal.user_id,
                api_key_id=metered.principal.api_key_id,
                model=model,
                endpoint=metered.endpoint,
                prompt_tokens=sum(
                    total.prompt.get(i, counted) for i, counted in enumerate(prompt_lens)
                ),
                completion_tokens=total.streamed,
                latency_ms=int((time.monotonic() - metered.started) * 1000),
                status=status,
            )
        )
