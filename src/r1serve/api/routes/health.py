"""Liveness: answers without touching the model thread."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from r1serve.api.deps import get_service
from r1serve.api.schemas import Health
from r1serve.api.service import CompletionService

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health(service: Annotated[CompletionService, Depends(get_service)]) -> Health:
    """Server status and queue depth."""
    stats = service.engine.stats()
    return Health(model=service.engine.model_name, running=stats.running, waiting=stats.waiting)
