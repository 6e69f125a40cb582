"""``ModelServices``: one completion service per served model, picked by a request's ``model``.

Every generating route asks ``service_for(request, model)``: the model's service (the default
one when ``model`` is omitted), 404 naming the served models for an unknown name, 403 when the
caller's API key is scoped to other models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import Request

from r1serve.api.security import current_principal
from r1serve.api.service import CompletionService
from r1serve.engine.models import ServedModel, ServedModels


class ModelServices:
    """Name -> the completion service of that model, over one ``ServedModels``."""

    def __init__(
        self, models: ServedModels, make: Callable[[ServedModel], CompletionService]
    ) -> None:
        self.models = models
        self._services = {model.name: make(model) for model in models}

    @property
    def default(self) -> CompletionService:
        return self._services[self.models.default]

    def get(self, name: str | None = None) -> CompletionService:
        """The service of model ``name`` (None: the default); 404 naming the served ones."""
        return self._services[self.models.get(name).name]

    def served(self, name: str | None) -> ServedModel:
        return self.models.get(name)

    def __iter__(self) -> Iterator[CompletionService]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)


def get_services(request: Request) -> ModelServices:
    services: ModelServices = request.app.state.services
    return services


def service_for(request: Request, model: str | None) -> CompletionService:
    """The service of the requested model, for this caller (404 unknown, 403 out of scope)."""
    service = get_services(request).get(model)
    current_principal(request).require_model(service.engine.model_name)
    return service
