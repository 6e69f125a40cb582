"""Bounds of the integer ids and counts a request may name: what the database columns hold.

A number past a column's range fails inside the database driver (``OverflowError`` on SQLite,
``integer out of range`` on PostgreSQL), which would be a 500; checked here it is a 400 that
names the parameter.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

INT32_MAX = 2**31 - 1  # PostgreSQL INTEGER: ids, requests_per_minute (SQLite's is 64-bit)
INT64_MAX = 2**63 - 1  # PostgreSQL BIGINT and SQLite INTEGER: tokens_per_day

UserIdPath = Annotated[int, Path(ge=1, le=INT32_MAX, description="A user's id.")]
KeyIdPath = Annotated[int, Path(ge=1, le=INT32_MAX, description="An API key's id.")]
UserIdQuery = Annotated[
    int | None, Query(ge=1, le=INT32_MAX, description="Only this user's; empty: everyone's.")
]
