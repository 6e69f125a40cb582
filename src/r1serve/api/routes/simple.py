"""The two endpoints of the script r1serve grew from, with the chat template applied."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from r1serve.api.body import OffLoopRoute
from r1serve.api.deps import get_settings, request_id, unless_disconnected
from r1serve.api.errors import route_params
from r1serve.api.metering import Admitted
from r1serve.api.schemas import (
    MAX_TOKENS_CAP,
    SSE_CONTENT,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
)
from r1serve.api.served import service_for
from r1serve.api.service import CompletionService
from r1serve.api.sse import event_stream, simple_events
from r1serve.engine.protocol import SamplingParams
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
    d = service.default_sampling
    return SamplingParams(
        temperature=temperature if temperature is not None else d.get("temperature", 1.0),
        top_p=top_p if top_p is not None else d.get("top_p", 1.0),
        top_k=d.get("top_k", 0),
        max_tokens=max_length,
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
    prompt: Annotated[str, Query(min_length=1, max_length=200_000)],
    max_length: Annotated[int | None, Query(ge=1, le=MAX_TOKENS_CAP)] = None,
    temperature: Annotated[float | None, Query(ge=0.0, le=100.0, allow_inf_nan=False)] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Response:
    """SSE: answer text as ``data:`` events, reasoning as ``event: reasoning``, then [DONE].

    ``max_length`` is the most new tokens (the prompt is not counted); ``model``: a served
    model's id (default: the server's default model).
    """
    service = service_for(request, model)
    with route_params(messages="prompt", max_tokens="max_length"):
        prompt_tokens = await service.prompts.prepare(
            len(prompt),
            lambda: service.engine.render_chat([{"role": "user", "content": prompt}]),
            param="prompt",
        )
        outputs = await service.start(
            request_id(request, "gen"), [prompt_tokens], _params(service, max_length, temperature)
        )
    return event_stream(simple_events(outputs), send_timeout_s=settings.send_timeout_s)


@router.post("/generate", response_model=GenerateResponse, dependencies=[Admitted])
async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
    """The whole reply at once: ``{"response": answer, "reasoning": ...}``."""
    service = service_for(request, body.model)
    with route_params(messages="prompt", max_tokens="max_length"):
        params = _params(service, body.max_length, body.temperature, body.top_p)
        work = service.generate(body.prompt, params, request_id(request, "gen"))
        return await unless_disconnected(request, work)
