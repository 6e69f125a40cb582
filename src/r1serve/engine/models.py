"""``ServedModels``: the models one server serves, by name, with a default.

Built at start-up (``engine.models_file.build_served_models``, or ``ServedModels.single`` for one
engine), started and closed with the app. Each model keeps the settings it was built with, so a
per-model option of the models file (``reasoning_format``, ``max_reasoning_tokens``…) applies to
its replies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from r1serve.engine.protocol import Engine
from r1serve.engine.source import ModelSource
from r1serve.errors import ConfigError, NotFoundError
from r1serve.settings import Settings

log = logging.getLogger("r1serve.engine")


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One served model: its name (the id clients send), engine and where it came from."""

    name: str
    engine: Engine
    settings: Settings | None = None  # None: the server's own settings
    source: ModelSource | None = None  # local files (Ollama's /api/show reads them); None: none
    summary: tuple[str, ...] = ()  # start-up lines: engine, memory plan…


class ServedModels:
    """Name -> served model, the default first, then as declared; the default answers
    requests that name no model."""

    def __init__(self, models: Sequence[ServedModel], default: str | None = None) -> None:
        if not models:
            raise ConfigError("no model to serve")
        self._models: dict[str, ServedModel] = {}
        for model in models:
            if model.name in self._models:
                raise ConfigError(f"model name {model.name!r} is declared twice")
            self._models[model.name] = model
        self.default = default if default is not None else models[0].name
        if self.default not in self._models:
            raise ConfigError(f"default model {self.default!r} is not among the served ones")
        # The default first (lists, the page's picker), then the others as declared.
        first = self._models.pop(self.default)
        self._models = {first.name: first, **self._models}

    @classmethod
    def single(cls, engine: Engine, source: ModelSource | None = None) -> ServedModels:
        """One engine, served under its own model name."""
        return cls([ServedModel(engine.model_name, engine, source=source)])

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def get(self, name: str | None = None) -> ServedModel:
        """The model called ``name`` (None: the default); 404 naming the served ones."""
        if name is None:
            return self._models[self.default]
        found = self._models.get(name)
        if found is None:
            raise NotFoundError(
                f"model {name[:200]!r} is not served here; this server serves {self.listing()}",
                param="model",
                code="model_not_found",
            )
        return found

    def listing(self) -> str:
        """The served names, quoted, for error messages."""
        return ", ".join(repr(name) for name in self._models)

    async def start(self) -> None:
        """Start every engine; if one fails, those already started are closed again."""
        started: list[ServedModel] = []
        try:
            for model in self:
                await model.engine.start()
                started.append(model)
        except BaseException:
            await _close_all(started)
            raise

    async def close(self) -> None:
        """Close every engine, each even when another one fails to close."""
        await _close_all(list(self))


async def _close_all(models: Sequence[ServedModel]) -> None:
    first: BaseException | None = None
    for model in reversed(models):
        try:
            await model.engine.close()
        except Exception as exc:  # the others still close; the first failure is raised
            log.exception("closing model %s failed", model.name)
            first = first or exc
    if first is not None:
        raise first
