"""Databases for tests: every storage and auth test runs on SQLite and on the local PostgreSQL.

The fixtures are registered in tests/conftest.py. PostgreSQL must answer (CI checks it runs):
if it does not, the tests that need it fail with a message that says so instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from r1serve.settings import Settings
from r1serve.storage import Database

POSTGRES_HOST = "127.0.0.1:5432"
POSTGRES_USERS = ("postgres", "root")


def find_postgres() -> tuple[str | None, list[str]]:
    """A URL that reaches the local PostgreSQL's `test` database (or None), and why not."""
    import sqlalchemy

    errors: list[str] = []
    for user in POSTGRES_USERS:
        url = f"postgresql+psycopg://{user}@{POSTGRES_HOST}/test"
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect():
                return url, errors
        except sqlalchemy.exc.OperationalError as exc:
            errors.append(f"{user}: {str(exc).splitlines()[0]}")
        finally:
            engine.dispose()
    return None, errors


def _postgres_admin_url() -> str:
    """A URL that reaches the local PostgreSQL's `test` database, or a failure that says why."""
    url, errors = find_postgres()
    if url is None:
        pytest.fail(
            f"PostgreSQL at {POSTGRES_HOST} (database 'test', trust auth) does not answer; the "
            "storage and auth tests need it. Start it, or deselect with -m 'not postgres'. "
            + "; ".join(errors),
            pytrace=False,
        )
    return url


@contextmanager
def fresh_postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database named ``prefix`` + random hex, dropped (with its
    connections) at the end."""
    import secrets

    import sqlalchemy

    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_run_url() -> Iterator[str]:
    """A database of its own for this test run, dropped at the end."""
    with fresh_postgres_database(_postgres_admin_url(), f"r1serve_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'r1serve.db'}"
        return
    import secrets

    import sqlalchemy

    run_url = request.getfixturevalue("postgres_run_url")
    schema = f"t_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(run_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{run_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def db_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings that point at this test's fresh database."""
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def database(db_settings: Settings) -> Iterator[Database]:
    """The test's database, migrated to the newest schema."""
    opened = Database.open(db_settings)
    try:
        yield opened
    finally:
        opened.close()
