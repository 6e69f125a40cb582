"""Backends by name, and the one place that turns settings into an engine.

``--engine auto`` picks llama.cpp for a ``.gguf`` file when its binding is installed and
transformers otherwise; ``transformers`` and ``llamacpp`` force one; ``upstream`` serves a model of
another OpenAI-compatible server (``--upstream-url``) and loads nothing here. A backend registers a
builder ``(settings, source) -> BuiltEngine``; imports are lazy so that choosing one backend never
loads another one's libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from r1serve.catalog.store import lookup
from r1serve.engine.built import BuiltEngine
from r1serve.engine.source import ModelSource, resolve_model_source
from r1serve.errors import ConfigError
from r1serve.settings import Settings

Builder = Callable[[Settings, ModelSource | None], BuiltEngine]

# name -> "module:function"; the module is imported only when that backend is chosen.
BACKENDS: dict[str, str] = {
    "transformers": "r1serve.engine.transformers.build:build_transformers",
    "llamacpp": "r1serve.engine.llamacpp.build:build_llamacpp",
    "upstream": "r1serve.engine.upstream.build:build_upstream_engine",
}


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def available(name: str) -> bool:
    """Whether the backend's libraries can be imported here."""
    module = BACKENDS[name].split(":", 1)[0]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def choose_backend(requested: str, source: ModelSource) -> str:
    """The backend to run ``source`` on: ``auto`` resolved, others checked."""
    if requested == "auto":
        if source.kind == "gguf" and "llamacpp" in BACKENDS and available("llamacpp"):
            return "llamacpp"
        return "transformers"
    if requested not in BACKENDS:
        raise ConfigError(
            f"unknown engine {requested!r}: use auto or one of {', '.join(backend_names())}"
        )
    if not available(requested):
        raise ConfigError(f"engine {requested!r} is not installed here")
    return requested


def builder(name: str) -> Builder:
    module, function = BACKENDS[name].split(":", 1)
    built: Builder = getattr(importlib.import_module(module), function)
    return built


def build_engine(
    settings: Settings,
    *,
    store_lookup: Callable[[str], Path | None] | None = None,
) -> BuiltEngine:
    """Find the configured model and load it on the chosen backend (not started yet)."""
    if settings.engine == "upstream":  # the model lives on another server
        built = builder("upstream")(settings, None)
        return BuiltEngine(built.engine, None, ("engine: upstream", *built.summary))
    if store_lookup is None:
        data_dir = settings.data_dir
        store_lookup = lambda name: lookup(name, data_dir)  # noqa: E731
    source = resolve_model_source(settings.model, store_lookup=store_lookup)
    name = choose_backend(settings.engine, source)
    built = builder(name)(settings, source)
    return BuiltEngine(built.engine, built.source, (f"engine: {name}", *built.summary))
