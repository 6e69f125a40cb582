"""The database: one SQLAlchemy engine, its session factory, and start-up migrations.

SQLite (the default, a file in the data directory) runs in WAL mode with a busy timeout and
foreign keys on. Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that two writers
queue on the busy timeout instead of one failing at once with "database is locked" when it tries
to upgrade a read lock; reads stay ``BEGIN DEFERRED`` and never wait for a writer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from r1serve.errors import ConfigError
from r1serve.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_FILE_NAME = "r1serve.db"
_BEGIN_OPTION = "r1serve_sqlite_begin"
CASEFOLD_FUNCTION = "r1_casefold"


def database_url(settings: Settings) -> URL:
    """The URL from settings, or the SQLite file in the data directory."""
    if settings.database_url:
        try:
            url = make_url(settings.database_url)
        except ArgumentError as exc:
            raise ConfigError(f"database_url is not a database URL: {exc}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"database_url must be sqlite:// or postgresql+psycopg://, "
                f"got {url.get_backend_name()}://"
            )
        return url
    return URL.create("sqlite+pysqlite", database=str(settings.data_dir / SQLITE_FILE_NAME))


class Database:
    """An engine plus session factories for reads and writes; open with ``Database.open``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Database:
        """Connect to the configured database and, by default, migrate it to the newest schema."""
        url = database_url(settings)
        if url.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url, settings.database_busy_timeout_s)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        database = cls(engine)
        if migrate:
            database.migrate()
        return database

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; nothing is committed. Rows stay readable after it closes."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction: committed on success, rolled back on error."""
        with self._write() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest migration (``alembic upgrade head``)."""
        # One write transaction: a second process starting at the same time waits, then finds
        # the schema current (PostgreSQL: the advisory lock taken in env.py).
        with self._write_engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def current_revision(self) -> str | None:
        """The migration the database is at; None for an empty database."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def alembic_config() -> Config:
    """Alembic configuration for the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic reads this only to find the script directory; the connection is passed in.
    config.set_main_option("sqlalchemy.url", "sqlite://")
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of r1serve."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError("r1serve ships no database migrations")
    return head


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    if url.database and url.database != ":memory:":
        path = Path(url.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the database folder {path.parent}: {exc}") from None
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, so writes can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        # SQLite's lower() folds ASCII only; searches fold case for every script.
        dbapi_connection.create_function(CASEFOLD_FUNCTION, 1, _casefold, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _casefold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value
