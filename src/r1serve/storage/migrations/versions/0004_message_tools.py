"""Tool calls and tool results in conversations: two nullable columns and the ``tool`` role.

Existing rows are kept as they are (the new columns are NULL). SQLite cannot change a CHECK
constraint in place, so there the table is copied into a new one whose self-reference already
names the new table: Alembic's batch copy would name ``messages`` in it, and with foreign keys
on, dropping the old table would cascade into the copy and delete every reply. Downgrading
deletes tool messages (and, through the parent key, what was said after them).

Revision ID: 0004_message_tools
Revises: 0003_reply_defaults
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_message_tools"
down_revision = "0003_reply_defaults"
branch_labels = None
depends_on = None

_ID = sa.String(32)
_UTC = sa.DateTime()  # naive UTC
_COPY = "_messages_0004"
_OLD_ROLES = "role IN ('user', 'assistant')"
_NEW_ROLES = "role IN ('user', 'assistant', 'tool')"
_COLUMNS = (
    "id, conversation_id, parent_id, role, content, reasoning, status, finish_reason, error, "
    "prompt_tokens, completion_tokens, reasoning_seconds, dropped_turns, created_at, "
    "finished_at, worker, heartbeat_at, stop_requested"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _copy_sqlite(_NEW_ROLES, with_tools=True)
        return
    op.add_column("messages", sa.Column("tool_calls", sa.JSON(), nullable=True))
    op.add_column("messages", sa.Column("tool_call_id", sa.String(256), nullable=True))
    op.drop_constraint(op.f("ck_messages_role"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_role"), "messages", _NEW_ROLES)


def downgrade() -> None:
    op.execute("DELETE FROM messages WHERE role = 'tool'")
    if op.get_bind().dialect.name == "sqlite":
        _copy_sqlite(_OLD_ROLES, with_tools=False)
        return
    op.drop_constraint(op.f("ck_messages_role"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_role"), "messages", _OLD_ROLES)
    op.drop_column("messages", "tool_call_id")
    op.drop_column("messages", "tool_calls")


def _copy_sqlite(roles: str, *, with_tools: bool) -> None:
    """Rebuild ``messages`` with ``roles`` (and the tool columns), keeping every row."""
    # Children may be copied before their parents: check the keys at commit.
    op.execute("PRAGMA defer_foreign_keys = ON")
    tool_columns: list[sa.Column[object]] = (
        [
            sa.Column("tool_calls", sa.JSON(), nullable=True),
            sa.Column("tool_call_id", sa.String(256), nullable=True),
        ]
        if with_tools
        else []
    )
    op.create_table(
        _COPY,
        sa.Column("id", _ID, nullable=False),
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("parent_id", _ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("finish_reason", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_seconds", sa.Float(), nullable=True),
        sa.Column("dropped_turns", sa.Integer(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", _UTC, nullable=True),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        *tool_columns,
        sa.CheckConstraint(roles, name=op.f("ck_messages_role")),
        sa.CheckConstraint(
            "status IN ('complete', 'generating', 'stopped', 'incomplete', 'error')",
            name=op.f("ck_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            [f"{_COPY}.id"],
            name=op.f("fk_messages_parent_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.execute(f"INSERT INTO {_COPY} ({_COLUMNS}) SELECT {_COLUMNS} FROM messages")
    op.drop_table("messages")  # its indexes go with it
    # SQLite renames the copy's reference to itself along with the table.
    op.rename_table(_COPY, "messages")
    op.create_index(op.f("ix_messages_parent_id"), "messages", ["parent_id"])
    op.create_index(op.f("ix_messages_status"), "messages", ["status"])
    op.create_index(
        "ix_messages_conversation_created", "messages", ["conversation_id", "created_at"]
    )
