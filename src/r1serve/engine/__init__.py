"""Model execution: no FastAPI imports here."""
