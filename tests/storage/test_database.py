"""The database: default location, SQLite settings, migrations, schema matches the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

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
    assert database.current_revision() == head_revision() == "0004_message_tools"
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


def _migrate_to(database: Database, revision: str, *, down: bool) -> None:
    with database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


_ROW = (
    "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, status, "
    "dropped_turns, created_at, stop_requested) VALUES "
    "(:id, 'c1', :parent, :role, :content, '', 'complete', 0, '2026-12-01 10:00:00', false)"
)


def _rows(database: Database) -> list[tuple[object, ...]]:
    with database.engine.connect() as connection:
        query = "SELECT id, parent_id, role, content FROM messages ORDER BY id"
        return [tuple(row) for row in connection.execute(text(query))]


def test_the_tool_migration_keeps_every_message_both_ways(database: Database) -> None:
    # 0003 -> 0004 -> 0003 on a tree with replies under replies: no row is lost but tool ones.
    _migrate_to(database, "0003_reply_defaults", down=True)
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, username, password_hash, role, disabled, created_at, "
                "password_changed_at) VALUES (1, 'u', 'h', 'user', false, "
                "'2026-12-01 10:00:00', '2026-12-01 10:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO conversations (id, user_id, title, system_prompt, settings, "
                "created_at, updated_at) VALUES ('c1', 1, 't', '', '{}', "
                "'2026-12-01 10:00:00', '2026-12-01 10:00:00')"
            )
        )
        # A child stored before its parent: on SQLite the copy must not depend on row order.
        for row in [("m3", None, "user", "again"), ("m1", None, "user", "hi"),
                    ("m2", "m1", "assistant", "hello")]:  # fmt: skip
            connection.execute(
                text(_ROW), dict(zip(("id", "parent", "role", "content"), row, strict=True))
            )
        connection.execute(text("UPDATE messages SET parent_id = 'm2' WHERE id = 'm3'"))
    before = _rows(database)
    _migrate_to(database, "0004_message_tools", down=False)
    assert _rows(database) == before
    with database.engine.begin() as connection:
        connection.execute(
            text(_ROW), {"id": "m4", "parent": "m2", "role": "tool", "content": "18 C"}
        )
        connection.execute(
            text("UPDATE messages SET tool_calls = :calls WHERE id = 'm2'"),
            {
                "calls": '[{"id": "call_1", "type": "function", '
                '"function": {"name": "f", "arguments": "{}"}}]'
            },
        )
    with pytest.raises(IntegrityError), database.engine.begin() as connection:
        connection.execute(text(_ROW), {"id": "m5", "parent": None, "role": "robot", "content": ""})
    with database.engine.begin() as connection:  # the parent key still cascades
        connection.execute(text("DELETE FROM messages WHERE id = 'm3'"))
    assert [row[0] for row in _rows(database)] == ["m1", "m2", "m4"]
    _migrate_to(database, "0003_reply_defaults", down=True)
    assert _rows(database) == [before[0], before[1]]
    columns = {column["name"] for column in inspect(database.engine).get_columns("messages")}
    assert not {"tool_calls", "tool_call_id"} & columns
    with pytest.raises(IntegrityError), database.engine.begin() as connection:
        connection.execute(text(_ROW), {"id": "m6", "parent": None, "role": "tool", "content": ""})
    database.migrate()
    assert database.current_revision() == head_revision()
    assert _rows(database) == [before[0], before[1]]


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
