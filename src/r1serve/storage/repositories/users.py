"""Users."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from r1serve.storage.models import User, utcnow


class UserRepository:
    """Reads and writes ``users`` rows inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, username: str, password_hash: str, role: str) -> User:
        """Insert a user; a taken name raises ``IntegrityError`` at flush."""
        user = User(username=username, password_hash=password_hash, role=role, disabled=False)
        self.session.add(user)
        self.session.flush()
        return user

    def get(self, user_id: int) -> User | None:
        """The user with this id."""
        return self.session.get(User, user_id)

    def by_username(self, username: str) -> User | None:
        """The user with this (already normalized) name."""
        return self.session.scalars(select(User).where(User.username == username)).first()

    def list(self) -> list[User]:
        """Every user, by name."""
        return list(self.session.scalars(select(User).order_by(User.username)))

    def count(self) -> int:
        """How many users exist."""
        return self.session.scalar(select(func.count()).select_from(User)) or 0

    def count_admins(self) -> int:
        """How many admins exist, enabled or not."""
        return self.session.scalar(select(func.count()).where(User.role == "admin")) or 0

    def count_enabled_admins(self) -> int:
        """How many admins can still log in."""
        query = select(func.count()).where(User.role == "admin", User.disabled.is_(False))
        return self.session.scalar(query) or 0

    def set_password_hash(
        self, user: User, password_hash: str, *, at: datetime | None = None
    ) -> None:
        """Store a new password hash."""
        user.password_hash = password_hash
        user.password_changed_at = at or utcnow()
        self.session.flush()

    def set_role(self, user: User, role: str) -> None:
        """Make the user an admin or a plain user."""
        user.role = role
        self.session.flush()

    def set_disabled(self, user: User, disabled: bool) -> None:
        """Disable or enable the user."""
        user.disabled = disabled
        self.session.flush()
