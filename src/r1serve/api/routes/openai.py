"""OpenAI-compatible routes: chat completions, text completions, models."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from r1serve.api.body import OffLoopRoute
from r1serve.api.deps import get_settings, request_id, unless_disconnected
from r1serve.api.errors import route_params
from r1serve.api.logprobs import TokenText
from r1serve.api.metering import Admitted, Metered
from r1serve.api.schemas import (
    SSE_CONTENT,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from r1serve.api.served import ModelServices, get_services, service_for
from r1serve.api.sse import chat_events, completion_events, event_stream
from r1serve.engine.models import ServedModel
from r1serve.settings import Settings

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 429, 503)
}
router = APIRouter(tags=["openai"], responses=ERRORS, route_class=OffLoopRoute)
Services = Annotated[ModelServices, Depends(get_services)]
Config = Annotated[Settings, Depends(get_settings)]


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    dependencies=[Admitted],
    responses={200: {"content": SSE_CONTENT}},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, settings: Config, meter: Metered
) -> Response:
    """Chat completion; ``stream: true`` gives SSE chunks with ``reasoning_content``."""
    rid = request_id(request, "chatcmpl")
    service = service_for(request, body.model)
    if not body.stream:
        result = await unless_disconnected(request, service.chat(body, rid, meter))
        return JSONResponse(result.model_dump())
    model = service.check_model(body.model)
    _, outputs = await service.start_chat(body, rid, meter)
    events = chat_events(
        outputs,
        request_id=rid,
        model=model,
        created=int(time.time()),
        choices=body.n,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        token_text=TokenText(service.engine.tokenizer) if body.logprobs else None,
    )
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    dependencies=[Admitted],
    responses={200: {"content": SSE_CONTENT}},
)
async def completions(
    body: CompletionRequest, request: Request, settings: Config, meter: Metered
) -> Response:
    """Raw text completion (no chat template); control tokens in the prompt are parsed."""
    rid = request_id(request, "cmpl")
    service = service_for(request, body.model)
    with route_params(messages="prompt"):
        if not body.stream:
            result = await unless_disconnected(request, service.completion(body, rid, meter))
            return JSONResponse(result.model_dump())
        model = service.check_model(body.model)
        prompts, outputs = await service.start_completion(body, rid, meter)
    events = completion_events(
        outputs,
        request_id=rid,
        model=model,
        created=int(time.time()),
        n=body.n,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        echo_prompts=[p.text for p in prompts] if body.echo else None,
        token_text=None if body.logprobs is None else TokenText(service.engine.tokenizer),
    )
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


def _card(request: Request, model: ServedModel) -> ModelCard:
    return ModelCard(
        id=model.name,
        created=request.app.state.started,
        max_model_len=model.engine.context_length,
        engine=model.engine.kind,
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, services: Services) -> ModelList:
    """Every served model: the default first, then the others as declared."""
    return ModelList(data=[_card(request, model) for model in services.models])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, request: Request, services: Services) -> ModelCard:
    """One model by id; 404 naming the served ones for anything else."""
    return _card(request, services.served(model_id))
