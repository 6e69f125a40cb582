"""An upstream engine from a config or from settings: find the model, pick the prompt counter."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx

from r1serve.engine.built import BuiltEngine
from r1serve.engine.source import ModelSource
from r1serve.engine.upstream.config import UpstreamConfig
from r1serve.engine.upstream.counting import (
    LocalCounter,
    PromptCounter,
    RemoteCounter,
    tokenize_shape,
)
from r1serve.engine.upstream.engine import UpstreamEngine
from r1serve.engine.upstream.wire import error_message
from r1serve.errors import ConfigError
from r1serve.settings import Settings

log = logging.getLogger("r1serve.upstream")

DEFAULT_CONTEXT = 32768


def _root(url: str) -> str:
    """The server root of an OpenAI base URL (``/tokenize`` lives beside ``/v1``)."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _headers(config: UpstreamConfig) -> dict[str, str]:
    key = os.environ.get(config.api_key_env)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _models(config: UpstreamConfig) -> list[dict[str, object]]:
    """The first answering replica's /models list ([] when none answers)."""
    for url in config.urls:
        try:
            response = httpx.get(
                f"{url.rstrip('/')}/models",
                headers=_headers(config),
                timeout=config.connect_timeout_s + 5,
            )
        except httpx.HTTPError as exc:
            log.warning("upstream %s: /models failed: %r", url, exc)
            continue
        if response.status_code in (401, 403):
            raise ConfigError(
                f"upstream {url} refused the API key from ${config.api_key_env} "
                f"({response.status_code}: {error_message(_json(response))})"
            )
        if response.status_code == 200:
            data = _json(response).get("data")
            return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
    return []


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _slot_context(config: UpstreamConfig) -> int | None:
    """llama.cpp's context per slot from its ``GET /props`` (its /v1/models has no
    ``max_model_len``); None from a server without it."""
    try:
        response = httpx.get(
            f"{_root(config.urls[0])}/props",
            headers=_headers(config),
            timeout=config.connect_timeout_s + 5,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    settings = _json(response).get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None


def _counter(config: UpstreamConfig, model: str) -> PromptCounter:
    choice = config.tokenizer
    root = _root(config.urls[0])
    timeout = config.connect_timeout_s + 5
    if choice == "estimate":
        return PromptCounter()
    if choice in ("auto", "upstream"):
        shape = tokenize_shape(root, model, _headers(config), timeout)
        if shape is not None:
            return RemoteCounter(root, model, _headers(config), timeout, shape)
        if choice == "upstream":
            raise ConfigError(
                f"upstream {root} does not answer POST /tokenize with token ids "
                "(as vLLM, SGLang or llama.cpp's server do)"
            )
        return PromptCounter()
    return LocalCounter(Path(choice).expanduser())


def build_upstream(config: UpstreamConfig) -> UpstreamEngine:
    """An engine for ``config`` (not started); asks the upstream for its model and context."""
    if not config.urls:
        raise ConfigError("--engine upstream needs --upstream-url (the server's .../v1 URL)")
    for url in config.urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"upstream URL {url!r} must start with http:// or https://")
    listed = _models(config)
    model = config.model
    if model is None:
        if not listed:
            raise ConfigError(
                "no upstream replica listed a model at /models; pass --upstream-model"
            )
        model = str(listed[0].get("id"))
    card = next((m for m in listed if m.get("id") == model), {})
    context = config.context_length
    if context is None:
        raw = card.get("max_model_len")
        if isinstance(raw, int) and raw > 0:
            context = raw
        else:
            context = _slot_context(config) or DEFAULT_CONTEXT
    return UpstreamEngine(
        config,
        model=model,
        served_name=config.served_name or model,
        context_length=context,
        counter=_counter(config, model),
    )


def build_upstream_engine(settings: Settings, source: ModelSource | None) -> BuiltEngine:
    """The registry's builder for ``--engine upstream`` (``source`` is not used)."""
    config = UpstreamConfig.from_settings(settings)
    engine = build_upstream(config)
    key = "set" if os.environ.get(config.api_key_env) else "not set"
    summary = (
        f"model {engine.model_name} on {len(config.urls)} upstream replica(s): "
        f"{', '.join(config.urls)} (as {engine.upstream_model}; context {engine.context_length}; "
        f"prompts counted by {engine.counter_name}; API key ${config.api_key_env} {key})",
    )
    return BuiltEngine(engine, None, summary)
