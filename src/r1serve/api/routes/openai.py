"""OpenAI-compatible routes: chat completions, text completions, models."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from r1serve.api.body import OffLoopRoute
from r1serve.api.deps import get_service, get_settings, request_id, unless_disconnected
from r1serve.api.errors import route_params
from r1serve.api.logprobs import TokenText
from r1serve.api.metering import Admitted
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
from r1serve.api.service import CompletionService
from r1serve.api.sse import chat_events, completion_events, event_stream
from r1serve.errors import NotFoundError
from r1serve.settings import Settings

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 429, 503)
}
router = APIRouter(tags=["openai"], responses=ERRORS, route_class=OffLoopRoute)
Service = Annotated[CompletionService, Depends(get_service)]
Config = Annotated[Settings, Depends(get_settings)]


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    dependencies=[Admitted],
    responses={200: {"content": SSE_CONTENT}},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, service: Service, settings: Config
) -> Response:
    """Chat completion; ``stream: true`` gives SSE chunks with ``reasoning_content``."""
    rid = request_id(request, "chatcmpl")
    if not body.stream:
        result = await unless_disconnected(request, service.chat(body, rid))
        return JSONResponse(result.model_dump())
    model = service.check_model(body.model)
    _, outputs = await service.start_chat(body, rid)
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
    body: CompletionRequest, request: Request, service: Service, settings: Config
) -> Response:
    """Raw text completion (no chat template); control tokens in the prompt are parsed."""
    rid = request_id(request, "cmpl")
    with route_params(messages="prompt"):
        if not body.stream:
            result = await unless_disconnected(request, service.completion(body, rid))
            return JSONResponse(result.model_dump())
        model = service.check_model(body.model)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        prompts = await service.prepare_texts(texts)
        outputs = await service.start(
            rid, prompts, service.sampling(body), n=body.n, timeout=body.timeout,
            split_reasoning=False, repetition_guard=body.repetition_guard,
        )  # fmt: skip
    events = completion_events(
        outputs,
        request_id=rid,
        model=model,
        created=int(time.time()),
        n=body.n,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        echo_prompts=texts if body.echo else None,
        token_text=None if body.logprobs is None else TokenText(service.engine.tokenizer),
    )
    return event_stream(events, send_timeout_s=settings.send_timeout_s)


def _card(request: Request, service: CompletionService) -> ModelCard:
    return ModelCard(
        id=service.engine.model_name,
        created=request.app.state.started,
        max_model_len=service.engine.context_length,
        engine=service.engine.kind,
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, service: Service) -> ModelList:
    """The served model."""
    return ModelList(data=[_card(request, service)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, request: Request, service: Service) -> ModelCard:
    """One model by id; 404 for anything not served."""
    if model_id != service.engine.model_name:
        raise NotFoundError(f"model {model_id[:200]!r} is not served here", param="model")
    return _card(request, service)
