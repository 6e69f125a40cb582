"""The chat page and its static assets (all vendored; nothing from a CDN)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(str(files("r1serve") / "ui" / "static"))

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The chat page."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs")
async def docs() -> FileResponse:
    """Interactive API documentation (Swagger UI, vendored)."""
    return FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})
