"""Ollama-compatible routes (``/api/chat``, ``/api/generate``, ``/api/tags``…), as Ollama's
``docs/api.md`` describes them: a thin mapping over ``CompletionService``, with the same keys,
quotas, usage records and limits as the OpenAI routes. Errors are ``{"error": "…"}``
(``api.ollama_wire.OllamaErrorShape``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from r1serve import __version__
from r1serve.api import ollama_mapping as mapping
from r1serve.api import ollama_models as models
from r1serve.api.body import OffLoopRoute
from r1serve.api.deps import get_service, get_settings, request_id, unless_disconnected
from r1serve.api.metering import Admitted
from r1serve.api.ollama_pull import pull_lines, target_of
from r1serve.api.ollama_schemas import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    ModelRequest,
    PullRequest,
)
from r1serve.api.ollama_wire import Line, NDJSONResponse, reply_lines
from r1serve.api.security import Admin
from r1serve.api.service import CompletionService
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
Service = Annotated[CompletionService, Depends(get_service)]
Config = Annotated[Settings, Depends(get_settings)]


def _facts(request: Request) -> models.ModelFacts:
    return models.facts_of(getattr(request.app.state, "model_source", None))


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
    service: Service,
    settings: Settings,
    body: ChatRequest | GenerateRequest,
    model: str,
    prompt: Prompt,
    text_field: str,
    split_reasoning: bool = True,
) -> Response:
    """Run ``prompt``; stream NDJSON lines or answer one object, under ``text_field``."""
    params = mapping.fit_context(
        service.engine, prompt, mapping.sampling(service, body.options), body.options
    )
    think = mapping.thinking(body.think)
    timer = mapping.Timer()
    outputs = await service.start(
        request_id(request, "ollama"), [prompt], params, split_reasoning=split_reasoning
    )

    def piece(content: str, thinking: str) -> Line:
        text: dict[str, str] = {"content" if text_field == "message" else "response": content}
        if thinking:
            text["thinking"] = thinking
        if text_field == "message":
            return {"model": model, "created_at": mapping.timestamp(),
                    "message": {"role": "assistant", **text}, "done": False}  # fmt: skip
        return {"model": model, "created_at": mapping.timestamp(), **text, "done": False}

    def last(finish: str | None, prompt_tokens: int, eval_tokens: int) -> Line:
        end = piece("", "")
        end.update(done=True, done_reason=mapping.done_reason(finish))
        end.update(timer.stats(prompt_tokens, eval_tokens))
        return end

    lines = reply_lines(outputs, piece, last, show_thinking=think.show, on_output=timer.output)
    if body.stream:
        return NDJSONResponse(lines, send_timeout_s=settings.send_timeout_s)
    whole = await unless_disconnected(request, _gather(lines, text_field))
    return JSONResponse(whole)


async def _gather(lines: AsyncIterator[Line], text_field: str) -> Line:
    """One object from a reply's lines: the texts joined, the last line's stats."""
    content: list[str] = []
    thinking: list[str] = []
    async for obj in lines:
        if "error" in obj:
            raise EngineError(str(obj["error"]))
        holder = obj["message"] if text_field == "message" else obj
        key = "content" if text_field == "message" else "response"
        content.append(holder.get(key, ""))
        thinking.append(holder.get("thinking", ""))
        if obj["done"]:
            holder[key] = "".join(content)
            if any(thinking):
                holder["thinking"] = "".join(thinking)
            return obj
    raise EngineError("the reply ended without a last line")


@router.post("/api/chat", dependencies=[Admitted])
async def chat(body: ChatRequest, request: Request, service: Service, settings: Config) -> Response:
    """Chat: NDJSON lines by default, one object with ``"stream": false``."""
    model = mapping.served_model(service, body.model)
    mapping.check_generation_fields(body, service.engine)
    if not body.messages:
        return JSONResponse(
            {**_loaded(model, body.keep_alive), "message": {"role": "assistant", "content": ""}}
        )
    prompt = service.engine.render_chat(mapping.chat_messages(body))
    return await _reply(request, service, settings, body, model, prompt, "message")


@router.post("/api/generate", dependencies=[Admitted])
async def generate(
    body: GenerateRequest, request: Request, service: Service, settings: Config
) -> Response:
    """Completion of one prompt, with the chat template unless ``raw``."""
    model = mapping.served_model(service, body.model)
    mapping.check_generation_fields(body, service.engine)
    if not body.prompt:
        return JSONResponse({**_loaded(model, body.keep_alive), "response": ""})
    if body.raw:
        prompt = service.text_prompt(body.prompt)
        split = body.think is not None  # raw text is the client's own template
        return await _reply(request, service, settings, body, model, prompt, "response", split)
    prompt = service.engine.render_chat(mapping.generate_messages(body))
    return await _reply(request, service, settings, body, model, prompt, "response")


@router.get("/api/tags")
async def tags(request: Request, service: Service, settings: Config) -> dict[str, Any]:
    """The served model first, then the other models in r1serve's store."""
    served = models.served_entry(service.engine, _facts(request), request.app.state.started)
    stored = await anyio.to_thread.run_sync(list_models, settings.data_dir)
    others = [
        models.stored_entry(m)
        for m in stored
        if m.format != "incomplete" and mapping.tagged(m.name) != served["name"]
    ]
    return {"models": [served, *others]}


@router.get("/api/ps")
async def running(request: Request, service: Service) -> dict[str, Any]:
    """The loaded model: the served one, for as long as the server runs."""
    entry = models.running_entry(service.engine, _facts(request), request.app.state.started)
    return {"models": [entry]}


@router.post("/api/show")
async def show(body: ModelRequest, request: Request, service: Service) -> dict[str, Any]:
    """Details, parameters, template, model_info and capabilities of the served model."""
    mapping.served_model(service, _name_of(body))
    return models.show(service.engine, _facts(request), request.app.state.started)


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
    body: ModelRequest, _: Admin, service: Service, settings: Config
) -> dict[str, str]:
    """Remove a model from r1serve's store (admins only); never the one being served."""
    name = mapping.untagged(_name_of(body))
    if name == mapping.untagged(service.engine.model_name):
        raise ConflictError(f"model {name!r} is being served; stop the server to remove it")
    remove: Callable[[], object] = lambda: remove_model(name, settings.data_dir)  # noqa: E731
    try:
        await anyio.to_thread.run_sync(remove)
    except ModelNotFoundError as exc:
        raise NotFoundError(f"model {name[:200]!r} not found", param="model") from exc
    return {"status": "success"}


@router.post("/api/embed")
@router.post("/api/embeddings")
async def embed(body: EmbedRequest, service: Service) -> Response:
    """r1serve serves generative models only: a clear 400, as Ollama answers for such models."""
    model = mapping.served_model(service, body.model)
    raise RequestError(f"model {model!r} does not support embeddings", param="model")


def _name_of(body: ModelRequest) -> str:
    try:
        return body.model_name()
    except ValueError as exc:
        raise RequestError(str(exc), param="model") from None
