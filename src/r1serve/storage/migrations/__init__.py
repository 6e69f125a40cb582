"""Alembic migrations of the r1serve database, run at start-up."""
