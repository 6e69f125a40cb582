"""Prometheus scrape endpoint: for admins and the scrape token (it has per-user figures)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from r1serve.api.schemas import ErrorResponse
from r1serve.api.security import admin_principal, current_principal

router = APIRouter(
    tags=["metrics"], responses={code: {"model": ErrorResponse} for code in (401, 403)}
)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def metrics(request: Request) -> Response:
    """Metrics in Prometheus text format (an admin, or ``Bearer`` R1SERVE_METRICS_TOKEN)."""
    if not getattr(request.state, "metrics_token", False):
        admin_principal(current_principal(request))
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
