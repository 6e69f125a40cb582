"""The database: default location, SQLite settings, migrations, schema matches the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from r1serve.errors import ConfigError
from r1serve.settings import Settings
from r1serve.storage import Database, database_url, head_revision
from r1serve.storage.database import alembic_config
from r1serve.storage.models import Base

TABLES = {
    "users",
    "auth_sessions",
    "api_keys",
    "quotas",
    "rate_counters",
    "usage_records",
    "conversations",
    "messages",
    "reply_defaults",
}


def test_default_is_a_sqlite_file_in_the_data_dir_created_on_first_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh" / "data", database_url=None)
    assert database_url(settings).database == str(tmp_path / "fresh" / "data" / "r1serve.db")
    database = Database.open(settings)
    try:
        assert (tmp_path / "fresh" / "data" / "r1serve.db").is_file()
        assert database.current_revision() == head_revision()
    finally:
        database.close()


def test_sqlite_runs_in_wal_mode_with_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, database_busy_timeout_s=7)
    database = Database.open(settings)
    try:
        with database.read() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA busy_timeout")).scalar() == 7000
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        database.close()


@pytest.mark.parametrize("url", ["mysql://x@y/z", "not a url"])
def test_unsupported_database_url_is_a_config_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="database_url"):
        database_url(Settings(data_dir=tmp_path, database_url=url))


def test_migrations_create_every_table_and_reach_head(database: Database) -> None:
    assert database.current_revision() == head_revision() == "0003_reply_defaults"
    assert set(inspect(database.engine).get_table_names()) >= TABLES


def test_migrating_again_changes_nothing(database: Database) -> None:
    database.migrate()
    database.migrate()
    assert database.current_revision() == head_revision()


def test_schema_from_migrations_matches_the_models(database: Database) -> None:
    # No schema change may live outside a migration: the migrated database equals the models.
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrations_downgrade_to_empty_and_upgrade_again(database: Database) -> None:
    with database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert not TABLES & set(inspect(database.engine).get_table_names())
    database.migrate()
    assert set(inspect(database.engine).get_table_names()) >= TABLES


def test_open_without_migrate_leaves_the_database_empty(db_settings: Settings) -> None:
    database = Database.open(db_settings, migrate=False)
    try:
        assert database.current_revision() is None
    finally:
        database.close()


def test_a_failed_write_rolls_back(database: Database) -> None:
    from r1serve.storage.repositories import UserRepository

    with pytest.raises(RuntimeError), database.write() as session:
        UserRepository(session).add("ghost", "hash", "user")
        raise RuntimeError("boom")
    with database.read() as session:
        assert UserRepository(session).by_username("ghost") is None
