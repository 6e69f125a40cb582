"""The FastAPI app factory. Nothing is built at import time; tests build their own app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from r1serve import __version__
from r1serve.api.deps import ClientGone
from r1serve.api.errors import install_error_handlers
from r1serve.api.middleware import BodyLimitMiddleware, RequestIdMiddleware, SecurityHeadersMiddleware
from r1serve.api.routes import health, openai, simple, ui
from r1serve.api.service import CompletionService
from r1serve.engine.protocol import Engine
from r1serve.settings import Settings


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """An app serving ``engine``; the engine starts and stops with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(
        title="r1serve",
        version=__version__,
        summary="OpenAI-compatible server for DeepSeek-R1 distills and other causal LMs",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.started = int(time.time())
    app.state.service = CompletionService(
        engine,
        reasoning_format=settings.reasoning_format,
        default_sampling=dict(getattr(engine, "default_sampling", {}) or {}),
        default_timeout_s=settings.request_timeout_s,
    )
    install_error_handlers(app)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, __: ClientGone) -> Response:
        return Response(status_code=499)

    for module in (openai, simple, health, ui):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=ui.STATIC_DIR), name="static")

    # Added last = outermost: the body limit sees bytes before anything else reads them.
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
