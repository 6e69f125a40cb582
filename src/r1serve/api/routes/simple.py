"""The two endpoints of the script r1serve grew from, with the chat template applied."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from r1serve.api.body import OffLoopRoute
from r1serve.api.deps import get_settings, request_id, unless_disconnected
from r1serve.api.errors import route_params
from r1serve.api.metering import Admitted, Metered
from r1serve.api.schemas import (
    SSE_CONTENT,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
)
from r1serve.api.served import service_for
from r1serve.api.service import CompletionService
from r1serve.api.sse import event_stream, simple_events
from r1serve.engine.protocol import SamplingParams
from r1serve.generation import SamplingRequest
from r1serve.generation.bounds import MAX_TOKENS, TEMPERATURE
from r1serve.settings import Settings

router = APIRouter(
    tags=["simple"], responses={400: {"model": ErrorResponse}}, route_class=OffLoopRoute
)


def _params(
    service: CompletionService,
    max_length: int | None,
    temperature: float | None,
    top_p: float | None = None,
) -> SamplingParams:
    """Only these three can be set here; of the model's defaults only top_k applies (as the
    script this grew from sampled)."""
    asked = SamplingRequest(temperature=temperature, top_p=top_p, max_tokens=max_length)
    params = service.sampling(asked)
    return SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        max_tokens=params.max_tokens,
    )


@router.get(
    "/stream-generate",
    dependencies=[Admitted],
    response_class=Response,
    responses={200: {"content": SSE_CONTENT, "description": "The answer as server-sent events."}},
)
async def stream_generate(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    meter: Metered,
    prompt: Annotated[str, Query(min_length=1, max_length=200_000)],
    max_length: Annotated[int | None, Query(**MAX_TOKENS.kwargs())] = None,
    temperature: Annotated[float | None, Query(**TEMPERATURE.kwargs(), allow_inf_nan=False)] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Response:
    """SSE: answer text as ``data:`` events, reasoning as ``event: reasoning``, then [DONE].

    ``max_length`` is the most new tokens (the prompt is not counted); ``model``: a served
    model's id (default: the server's default model).
    """
    service = service_for(request, model)
    with route_params(messages="prompt", max_tokens="max_length"):
        rendered = await service.simple_prompt(prompt)
        params = _params(service, max_length, temperature)
        outputs = await service.start(request_id(request, "gen"), [rendered], params, meter=meter)
    return event_stream(simple_events(outputs), send_timeout_s=settings.send_timeout_s)


@router.post("/generate", response_model=GenerateResponse, dependencies=[Admitted])
async def generate(body: GenerateRequest, request: Request, meter: Metered) -> GenerateResponse:
    """The whole reply at once: ``{"response": answer, "reasoning": ...}``."""
    service = service_for(request, body.model)
    with route_params(messages="prompt", max_tokens="max_length"):
        params = _params(service, body.max_length, body.temperature, body.top_p)
        work = service.generate(body.prompt, params, request_id(request, "gen"), meter)
        return await unless_disconnected(request, work)
