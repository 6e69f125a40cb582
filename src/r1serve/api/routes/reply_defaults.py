"""The caller's own reply defaults, and the values a new conversation's replies would use."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel

from r1serve.api.routes.conversations import History
from r1serve.api.security import Caller
from r1serve.conversations import ReplySettings
from r1serve.conversations.defaults import InForce, Source, in_force, page_reply_cap
from r1serve.generation.sampling import SERVER_FALLBACKS

router = APIRouter(prefix="/api/me", tags=["conversations"])


class InForceOut(BaseModel):
    value: Any
    source: Source


class ReplyDefaultsOut(BaseModel):
    model: str
    user: dict[str, Any]
    model_defaults: dict[str, Any]
    server_defaults: dict[str, Any]
    in_force: dict[str, InForceOut]


def _out(history: History, user: dict[str, Any], name: str | None = None) -> ReplyDefaultsOut:
    service = history.services.get(name)
    engine = service.engine
    model = dict(service.default_sampling)
    model["max_tokens"] = page_reply_cap(engine.model_name)
    forced: dict[str, InForce] = in_force(
        conversation={}, user=user, model_defaults=model, model_name=engine.model_name
    )
    return ReplyDefaultsOut(
        model=engine.model_name,
        user=user,
        model_defaults=model,
        server_defaults=SERVER_FALLBACKS,
        in_force={k: InForceOut(value=v.value, source=v.source) for k, v in forced.items()},
    )


@router.get("/reply-defaults", response_model=ReplyDefaultsOut)
async def get_reply_defaults(
    caller: Caller,
    history: History,
    model: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> ReplyDefaultsOut:
    """My defaults, and each setting's value in force with its source (a conversation's own
    settings come first), for ``model`` (default: the server's default model)."""
    user = await anyio.to_thread.run_sync(history.defaults.get, caller.user_id)
    return _out(history, user, model)


@router.put("/reply-defaults", response_model=ReplyDefaultsOut)
async def put_reply_defaults(
    body: ReplySettings, caller: Caller, history: History
) -> ReplyDefaultsOut:
    """Replace my defaults; empty fields fall back to the model's and the server's."""
    user = await anyio.to_thread.run_sync(history.defaults.set, caller.user_id, body)
    return _out(history, user)
