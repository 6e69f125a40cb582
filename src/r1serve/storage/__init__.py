"""Database models, migrations and repositories; no FastAPI imports here."""
