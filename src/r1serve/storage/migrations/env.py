"""Alembic environment: run by ``Database.migrate`` with a connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from r1serve.storage.models import Base

# Any constant works; it only has to be the same for every r1serve process.
_POSTGRES_MIGRATION_LOCK = 0x7231_7365_7276  # "r1serv"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    if connection.dialect.name == "postgresql":
        # Replicas that start together migrate one after the other.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK}
        )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("r1serve migrations run through r1serve.storage.Database.migrate()")
_run(connection)
