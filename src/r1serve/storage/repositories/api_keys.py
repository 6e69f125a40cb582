"""API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from r1serve.storage.models import ApiKey, User


class ApiKeyRepository:
    """Reads and writes ``api_keys`` rows inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        *,
        user_id: int,
        prefix: str,
        key_hash: str,
        name: str,
        models: list[str] | None,
        expires_at: datetime | None,
    ) -> ApiKey:
        """Store a new key; a taken prefix raises ``IntegrityError`` at flush."""
        row = ApiKey(
            user_id=user_id,
            prefix=prefix,
            key_hash=key_hash,
            name=name,
            models=models,
            expires_at=expires_at,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, key_id: int) -> ApiKey | None:
        """The key with this id."""
        return self.session.get(ApiKey, key_id)

    def by_prefix(self, prefix: str) -> ApiKey | None:
        """The key with this visible prefix."""
        return self.session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()

    def by_prefix_with_user(self, prefix: str) -> tuple[ApiKey, User] | None:
        """The key with this visible prefix, and its owner."""
        query = (
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.prefix == prefix)
        )
        row = self.session.execute(query).first()
        return None if row is None else (row[0], row[1])

    def by_id_with_user(self, key_id: int) -> tuple[ApiKey, User] | None:
        """The key with this id, and its owner."""
        query = (
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.id == key_id)
        )
        row = self.session.execute(query).first()
        return None if row is None else (row[0], row[1])

    def list(self, user_id: int | None = None) -> list[tuple[ApiKey, User]]:
        """Keys with their owners, newest first; one user's when ``user_id`` is given."""
        query = select(ApiKey, User).join(User, User.id == ApiKey.user_id)
        if user_id is not None:
            query = query.where(ApiKey.user_id == user_id)
        query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        return [(row[0], row[1]) for row in self.session.execute(query)]

    def revoke(self, key: ApiKey, at: datetime) -> None:
        """Mark the key revoked (kept for the usage records that name it)."""
        if key.revoked_at is None:
            key.revoked_at = at
            self.session.flush()
