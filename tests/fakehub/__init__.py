"""A fake Hugging Face hub for download tests (see server.py)."""

from fakehub.server import (
    COMMIT,
    HTML_ERROR_PAGE,
    FakeHub,
    Faults,
    HubFile,
    dead_url,
    running_hub,
)

__all__ = ["COMMIT", "HTML_ERROR_PAGE", "FakeHub", "Faults", "HubFile", "dead_url", "running_hub"]
