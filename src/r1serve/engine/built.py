"""What every backend's builder returns: the engine and the lines printed about it at start-up.

Its own module, so that choosing one backend (llama.cpp, upstream) never imports another's
libraries (transformers and torch, some 200 MB of resident memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from r1serve.engine.protocol import Engine
from r1serve.engine.source import ModelSource


@dataclass(frozen=True, slots=True)
class BuiltEngine:
    """A backend ready to start, and the lines that say what was chosen and why."""

    engine: Engine
    source: ModelSource | None  # None: an upstream server holds the model
    summary: tuple[str, ...]  # printed at start-up: model, memory plan, runner
