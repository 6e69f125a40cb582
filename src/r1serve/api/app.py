"""The FastAPI app factory. Nothing is built at import time; tests build their own app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from r1serve import __version__
from r1serve.api.access import AccessWatch
from r1serve.api.deps import ClientGone
from r1serve.api.errors import install_error_handlers
from r1serve.api.history import HistoryService
from r1serve.api.metrics import ServerMetrics
from r1serve.api.middleware import (
    BodyLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from r1serve.api.ollama_wire import OllamaErrorShape
from r1serve.api.reply_bus import ReplyBus
from r1serve.api.routes import (
    auth,
    conversations,
    health,
    keys,
    metrics,
    ollama,
    openai,
    reply_defaults,
    simple,
    ui,
    usage,
    users,
)
from r1serve.api.schemas import ERROR_RESPONSES, OLLAMA_ERROR_RESPONSES
from r1serve.api.security import (
    AuthMiddleware,
    HostAllowListMiddleware,
    allowed_host_names,
    check_bind,
)
from r1serve.api.served import ModelServices
from r1serve.api.service import CompletionService
from r1serve.auth import AuthService, close_accounts, open_accounts
from r1serve.engine.models import ServedModel, ServedModels
from r1serve.engine.protocol import Engine
from r1serve.errors import ShuttingDownError
from r1serve.settings import Settings


def _without_422(app: FastAPI) -> None:
    """Validation errors are 400 here (errors.py), so the document must not promise 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    if isinstance(operation, dict):
                        operation.get("responses", {}).pop("422", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def end_streams(app: FastAPI) -> None:
    """The server is shutting down: end running streams well-formed before it waits for them.

    Stored replies stop first, saved as incomplete (their followers get the reply's own end);
    every other stream then fails with ShuttingDownError: an error event and its end marker.
    """
    history = getattr(app.state, "history", None)
    if history is None:  # never started
        return
    await history.close()
    app.state.access.end_all(ShuttingDownError())


def create_app(
    settings: Settings, engine: Engine | ServedModels, accounts: AuthService | None = None
) -> FastAPI:
    """An app serving ``engine`` (or several models); engines start and stop with its lifespan.

    ``accounts`` (users, keys, quotas, usage over the database) stays the caller's to close;
    without it the app opens the database from ``settings`` at start-up and closes it at the end.
    """
    check_bind(settings)
    models = engine if isinstance(engine, ServedModels) else ServedModels.single(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = accounts is None
        app.state.accounts = open_accounts(settings) if own else accounts
        app.state.accounts.usage.start()
        app.state.access = AccessWatch(app.state.accounts.access_problem, settings.auth_recheck_s)
        app.state.access.start()
        bus = None
        if settings.redis_url:  # replicas: before the models load, so a dead Redis fails fast
            bus = await ReplyBus.connect(settings.redis_url, settings.redis_key_prefix)
        app.state.bus = bus
        await models.start()
        history = HistoryService.over(
            app.state.accounts.database, app.state.services, app.state.access, bus
        )
        app.state.history = history
        try:
            await history.start()
            yield
        finally:
            try:
                await history.close()  # running replies are saved as incomplete
            finally:
                await models.close()
                await app.state.access.close()
                if bus is not None:
                    await bus.close()
                if own:
                    close_accounts(app.state.accounts)

    app = FastAPI(
        title="r1serve",
        version=__version__,
        summary="OpenAI-compatible server for DeepSeek-R1 distills and other causal LMs",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.models = models
    app.state.started = int(time.time())

    def service(model: ServedModel) -> CompletionService:
        own = model.settings or settings
        return CompletionService(
            model.engine,
            reasoning_format=own.reasoning_format,
            default_sampling=_defaults(own, model.engine),
            default_timeout_s=settings.request_timeout_s,
            prompt_workers=settings.prompt_workers,
            max_prompt_chars=own.max_prompt_chars,
        )

    app.state.services = ModelServices(models, service)
    # The default model's engine and service, for what serves one model (health, old callers).
    app.state.engine = models.get().engine
    app.state.service = app.state.services.default
    install_error_handlers(app)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, __: ClientGone) -> Response:
        return Response(status_code=499)

    app.state.metrics = ServerMetrics([model.engine for model in models])
    routers = (openai, ollama, simple, health, metrics, ui, auth, keys, users, usage, conversations)
    for module in (*routers, reply_defaults):
        errors = OLLAMA_ERROR_RESPONSES if module is ollama else ERROR_RESPONSES
        app.include_router(module.router, responses=errors)
    _without_422(app)
    app.mount("/static", StaticFiles(directory=ui.STATIC_DIR), name="static")

    # Added last = outermost. Inside out: auth (default deny), headers, request id, the body
    # limit (sees bytes before anything else reads them), CORS, and the Host allow-list first.
    app.add_middleware(AuthMiddleware, accounts=lambda: app.state.accounts)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        any_origin = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if any_origin else settings.cors_origins,
            allow_credentials=not any_origin,  # never "*" together with cookies
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-CSRF-Token"],
        )
    app.add_middleware(HostAllowListMiddleware, allowed=allowed_host_names(settings))
    app.add_middleware(OllamaErrorShape)  # outermost: every error on Ollama's paths
    return app


def _defaults(settings: Settings, engine: Engine) -> dict[str, Any]:
    """The model's sampling defaults; the server's thinking budget, when set, wins over its."""
    defaults = dict(engine.default_sampling)
    if settings.max_reasoning_tokens is not None:
        defaults["max_reasoning_tokens"] = settings.max_reasoning_tokens
    return defaults
