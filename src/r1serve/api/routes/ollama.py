"""Ollama-compatible routes (``/api/chat``, ``/api/generate``, ``/api/tags``…), as Ollama's
``docs/api.md`` describes them: a thin mapping over ``CompletionService``, with the same keys,
quotas, usage records and limits as the OpenAI routes. Errors are ``{"error": "…"}``
(``api.ollama_wire.OllamaErrorShape``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from r1serve import __version__
from r1serve.api import ollama_mapping as mapping
from r1serve.api import ollama_models as models
from r1serve.api import ollama_tools
from r1serve.api.body import OffLoopRoute
from r1serve.api.deps import get_settings, request_id, unless_disconnected
from r1serve.api.metering import Admitted, Metered, MeteredRequest
from r1serve.api.ollama_pull import pull_lines, target_of
from r1serve.api.ollama_schemas import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    ModelRequest,
    PullRequest,
)
from r1serve.api.ollama_wire import Line, NDJSONResponse, reply_lines
from r1serve.api.security import Admin, current_principal
from r1serve.api.served import ModelServices, get_services
from r1serve.api.service import CompletionService
from r1serve.api.tools import ToolSetup, setup_for, with_tool_calls
from r1serve.catalog.pull import PullOptions
from r1serve.catalog.store import list_models, remove_model
from r1serve.engine.protocol import Prompt
from r1serve.errors import (
    ConflictError,
    EngineError,
    ModelNotFoundError,
    NotFoundError,
    RequestError,
)
from r1serve.settings import Settings

# The Ollama API version whose documented behaviour this follows (clients check it).
OLLAMA_API_VERSION = "0.12.0"

router = APIRouter(tags=["ollama"], route_class=OffLoopRoute)
Services = Annotated[ModelServices, Depends(get_services)]
Config = Annotated[Settings, Depends(get_settings)]


def _pick(request: Request, requested: str) -> tuple[CompletionService, str]:
    """The service and name of the served model ``requested`` names (``x`` or ``x:latest``);
    404 naming the served ones, 403 for a key scoped to other models."""
    services = get_services(request)
    name = mapping.served_model(services.models.names, requested)
    current_principal(request).require_model(name)
    return services.get(name), name


def _facts(request: Request, name: str) -> models.ModelFacts:
    """What the model's own files say; ``app.state.model_source`` for a single model built
    outside ``ServedModels`` (older callers set it)."""
    services = get_services(request)
    source = services.served(name).source
    if source is None and len(services) == 1:
        source = getattr(request.app.state, "model_source", None)
    return models.facts_of(source)


def _loaded(model: str, keep_alive: object) -> dict[str, Any]:
    """Ollama's answer to a request with nothing to generate: (un)load the model."""
    unload = keep_alive in (0, "0", "0s", "0m")
    return {
        "model": model,
        "created_at": mapping.timestamp(),
        "done": True,
        "done_reason": "unload" if unload else "load",
    }


async def _reply(
    request: Request,
    service: CompletionService,
    settings: Settings,
    body: ChatRequest | GenerateRequest,
    model: str,
    prompt: Prompt,
    text_field: str,
    meter: MeteredRequest,
    *,
    split_reasoning: bool = True,
    tools: ToolSetup | None = None,
) -> Response:
    """Run ``prompt``; stream NDJSON lines or answer one object, under ``text_field``."""
    think = mapping.thinking(body.think)
    params = mapping.fit_context(
        service.engine, prompt, mapping.sampling(service, body.options), body.options
    )
    params = replace(
        think.params(params), constraint=ollama_tools.format_constraint(body.format, prompt)
    )
    timer = mapping.Timer()
    try:
        outputs = await service.start(
            request_id(request, "ollama"),
            [prompt],
            params,
            split_reasoning=split_reasoning,
            meter=meter,
        )
    except RequestError as exc:
        if exc.param != "response_format":
            raise
        raise RequestError(f"format: {exc.message}", param="format") from None
    if tools is not None:
        outputs = with_tool_calls(outputs, tools, 1)

    def piece(content: str, thinking: str, calls: list[Line]) -> Line:
        text: dict[str, Any] = {"content" if text_field == "message" else "response": content}
        if thinking:
            text["thinking"] = thinking
        if calls:
            text["tool_calls"] = calls
        if text_field == "message":
            return {"model": model, "created_at": mapping.timestamp(),
                    "message": {"role": "assistant", **text}, "done": False}  # fmt: skip
        return {"model": model, "created_at": mapping.timestamp(), **text, "done": False}

    def last(finish: str | None, prompt_tokens: int, eval_tokens: int) -> Line:
        end = piece("", "", [])
        end.update(done=True, done_reason=mapping.done_reason(finish))
        end.update(timer.stats(prompt_tokens, eval_tokens))
        return end

    lines = reply_lines(outputs, piece, last, show_thinking=think.show, on_output=timer.output)
    if body.stream:
        return NDJSONResponse(lines, send_timeout_s=settings.send_timeout_s)
    whole = await unless_disconnected(request, _gather(lines, text_field))
    return JSONResponse(whole)


async def _gather(lines: AsyncIterator[Line], text_field: str) -> Line:
    """One object from a reply's lines: the texts and tool calls joined, the last line's stats."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[Line] = []
    async for obj in lines:
        if "error" in obj:
            raise EngineError(str(obj["error"]))
        holder = obj["message"] if text_field == "message" else obj
        key = "content" if text_field == "message" else "response"
        content.append(holder.get(key, ""))
        thinking.append(holder.get("thinking", ""))
        calls.extend(holder.get("tool_calls", ()))
        if obj["done"]:
            holder[key] = "".join(content)
            if any(thinking):
                holder["thinking"] = "".join(thinking)
            if calls:
                holder["tool_calls"] = calls
            return obj
    raise EngineError("the reply ended without a last line")


@router.post("/api/chat", dependencies=[Admitted])
async def chat(body: ChatRequest, request: Request, settings: Config, meter: Metered) -> Response:
    """Chat: NDJSON lines by default, one object with ``"stream": false``; ``tools`` offered
    come back as ``message.tool_calls``."""
    service, model = _pick(request, body.model)
    mapping.check_generation_fields(body, service.engine)
    if not body.messages:
        return JSONResponse(
            {**_loaded(model, body.keep_alive), "message": {"role": "assistant", "content": ""}}
        )
    messages, offered = ollama_tools.chat_messages(body), ollama_tools.offered_tools(body)
    prompt = await service.prepare_chat(
        messages,
        tools=offered,
        skip_thinking=mapping.thinking(body.think).skip,
        chars=sum(len(m.content) for m in body.messages),
    )
    tools = setup_for(offered, prompt)
    return await _reply(
        request, service, settings, body, model, prompt, "message", meter, tools=tools
    )


@router.post("/api/generate", dependencies=[Admitted])
async def generate(
    body: GenerateRequest, request: Request, settings: Config, meter: Metered
) -> Response:
    """Completion of one prompt, with the chat template unless ``raw``."""
    service, model = _pick(request, body.model)
    mapping.check_generation_fields(body, service.engine)
    if not body.prompt:
        return JSONResponse({**_loaded(model, body.keep_alive), "response": ""})
    if body.raw:
        [raw] = await service.prepare_texts([body.prompt])
        split = body.think is not None  # raw text is the client's own template
        return await _reply(
            request, service, settings, body, model, raw, "response", meter, split_reasoning=split
        )
    prompt = await service.prepare_chat(
        mapping.generate_messages(body),
        skip_thinking=mapping.thinking(body.think).skip,
        chars=len(body.prompt) + len(body.system or ""),
        param="prompt",
    )
    return await _reply(request, service, settings, body, model, prompt, "response", meter)


@router.get("/api/tags")
async def tags(request: Request, services: Services, settings: Config) -> dict[str, Any]:
    """The served models first, then the other models in r1serve's store."""
    started = request.app.state.started
    served = [
        models.served_entry(s.engine, _facts(request, s.engine.model_name), started)
        for s in services
    ]
    names = {entry["name"] for entry in served}
    stored = await anyio.to_thread.run_sync(list_models, settings.data_dir)
    others = [
        models.stored_entry(m)
        for m in stored
        if m.format != "incomplete" and mapping.tagged(m.name) not in names
    ]
    return {"models": [*served, *others]}


@router.get("/api/ps")
async def running(request: Request, services: Services) -> dict[str, Any]:
    """The loaded models: the served ones, for as long as the server runs."""
    started = request.app.state.started
    return {
        "models": [
            models.running_entry(s.engine, _facts(request, s.engine.model_name), started)
            for s in services
        ]
    }


@router.post("/api/show")
async def show(body: ModelRequest, request: Request, services: Services) -> dict[str, Any]:
    """Details, parameters, template, model_info and capabilities of a served model."""
    name = mapping.served_model(services.models.names, _name_of(body))
    engine = services.get(name).engine
    return models.show(engine, _facts(request, name), request.app.state.started)


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION, "r1serve": __version__}


@router.post("/api/pull")
async def pull(body: PullRequest, _: Admin, settings: Config) -> Response:
    """Download into r1serve's store from the hub (admins only); status lines as Ollama's."""
    target_of(_name_of(body))  # bad names are a 400 before the stream starts
    lines = pull_lines(_name_of(body), settings.data_dir, PullOptions())
    if body.stream:
        return NDJSONResponse(lines, send_timeout_s=settings.send_timeout_s)
    last: Line = {}
    async for obj in lines:
        if "error" in obj:
            raise RequestError(str(obj["error"]), param="model")
        last = obj
    return JSONResponse(last)


@router.delete("/api/delete")
async def delete(
    body: ModelRequest, _: Admin, services: Services, settings: Config
) -> dict[str, str]:
    """Remove a model from r1serve's store (admins only); never one being served."""
    name = mapping.untagged(_name_of(body))
    if any(name == mapping.untagged(served) for served in services.models.names):
        raise ConflictError(f"model {name!r} is being served; stop the server to remove it")
    remove: Callable[[], object] = lambda: remove_model(name, settings.data_dir)  # noqa: E731
    try:
        await anyio.to_thread.run_sync(remove)
    except ModelNotFoundError as exc:
        raise NotFoundError(f"model {name[:200]!r} not found", param="model") from exc
    return {"status": "success"}


@router.post("/api/embed")
@router.post("/api/embeddings")
async def embed(body: EmbedRequest, services: Services) -> Response:
    """r1serve serves generative models only: a clear 400, as Ollama answers for such models."""
    model = mapping.served_model(services.models.names, body.model)
    raise RequestError(f"model {model!r} does not support embeddings", param="model")


def _name_of(body: ModelRequest) -> str:
    try:
        return body.model_name()
    except ValueError as exc:
        raise RequestError(str(exc), param="model") from None
