"""Web login sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from r1serve.storage.models import AuthSession, User


class SessionRepository:
    """Reads and writes ``auth_sessions`` rows inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, user_id: int, token_hash: str, expires_at: datetime) -> AuthSession:
        """Store a new login session."""
        row = AuthSession(user_id=user_id, token_hash=token_hash, expires_at=expires_at)
        self.session.add(row)
        self.session.flush()
        return row

    def live_with_user(self, token_hash: str, now: datetime) -> tuple[AuthSession, User] | None:
        """The unexpired session with this token hash, and its user."""
        query = (
            select(AuthSession, User)
            .join(User, User.id == AuthSession.user_id)
            .where(AuthSession.token_hash == token_hash, AuthSession.expires_at > now)
        )
        row = self.session.execute(query).first()
        return None if row is None else (row[0], row[1])

    def delete_by_hash(self, token_hash: str) -> int:
        """End one session; returns how many rows went."""
        result = self.session.execute(
            delete(AuthSession).where(AuthSession.token_hash == token_hash)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def delete_for_user(self, user_id: int) -> int:
        """End every session of a user."""
        result = self.session.execute(delete(AuthSession).where(AuthSession.user_id == user_id))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def delete_expired(self, now: datetime) -> int:
        """Remove sessions that have expired."""
        result = self.session.execute(delete(AuthSession).where(AuthSession.expires_at <= now))
        return int(result.rowcount)  # type: ignore[attr-defined]
