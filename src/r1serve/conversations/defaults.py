"""Per-user reply defaults, and which value a conversation's reply uses for each setting.

A reply's setting comes from, first to last: the conversation, the user's defaults, the
model (its recommended sampling; for the reply length, the page's cap for the model), the
server. ``in_force`` names the source of each, so the page can show it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from r1serve.conversations.settings import ReplySettings
from r1serve.generation.sampling import SERVER_FALLBACKS
from r1serve.storage import Database, utcnow
from r1serve.storage.models import ReplyDefaults

Source = Literal["conversation", "user", "model", "server"]

# DeepSeek's recommended maximum generation length for the R1 distills; a reply of another
# model that runs past a few thousand tokens is almost always rambling.
R1_REPLY_CAP = 32768
OTHER_REPLY_CAP = 4096
_R1 = re.compile(r"(?:^|[^a-z0-9])r1(?:[^a-z0-9]|$)")


def page_reply_cap(model_name: str) -> int:
    """The default reply cap of the chat page for a model: long for R1 distills."""
    return R1_REPLY_CAP if _R1.search(model_name.lower()) else OTHER_REPLY_CAP


@dataclass(frozen=True)
class InForce:
    value: Any
    source: Source


def in_force(
    *,
    conversation: Mapping[str, Any],
    user: Mapping[str, Any],
    model_defaults: Mapping[str, Any],
    model_name: str,
) -> dict[str, InForce]:
    """Each reply setting's value and where it comes from."""
    model = {**model_defaults, "max_tokens": page_reply_cap(model_name)}
    out: dict[str, InForce] = {}
    for name in ReplySettings.model_fields:
        if conversation.get(name) is not None:
            out[name] = InForce(conversation[name], "conversation")
        elif user.get(name) is not None:
            out[name] = InForce(user[name], "user")
        elif model.get(name) is not None:
            out[name] = InForce(model[name], "model")
        else:
            out[name] = InForce(SERVER_FALLBACKS.get(name), "server")
    return out


def merged(conversation: Mapping[str, Any], user: Mapping[str, Any]) -> ReplySettings:
    """The conversation's settings over the user's defaults (unset fields stay unset)."""
    values = {**{k: v for k, v in user.items() if v is not None}, **dict(conversation)}
    known = {k: v for k, v in values.items() if k in ReplySettings.model_fields}
    return ReplySettings.model_validate(known, strict=False)


class ReplyDefaultsStore:
    """The ``reply_defaults`` rows: one user's own settings each."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def get(self, user_id: int) -> dict[str, Any]:
        """The user's defaults (set fields only); {} when they set none."""
        with self.database.read() as session:
            row = session.get(ReplyDefaults, user_id)
            return dict(row.settings) if row else {}

    def set(self, user_id: int, settings: ReplySettings) -> dict[str, Any]:
        """Replace the user's defaults; returns what is stored."""
        stored = settings.stored()
        with self.database.write() as session:
            row = session.get(ReplyDefaults, user_id)
            if row is None:
                session.add(ReplyDefaults(user_id=user_id, settings=stored, updated_at=utcnow()))
            else:
                row.settings = stored
                row.updated_at = utcnow()
        return stored
