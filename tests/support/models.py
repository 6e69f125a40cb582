"""Paths to the test models and the tiny model's one known reply."""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY_R1_DIR = FIXTURES / "tiny-r1"
TINY_R1_HF = TINY_R1_DIR / "hf"
TINY_R1_GGUF = TINY_R1_DIR / "tiny-r1.gguf"
R1_THINK_TEMPLATE = FIXTURES / "templates" / "r1-think.jinja"

# See fixtures/tiny-r1/UPSTREAM_README.md.
TINY_REASONING = "Okay, the user says hello. I should greet them back."
TINY_ANSWER = "Hello! How can I help you today?"
TINY_RAW = f"<think>\n{TINY_REASONING}\n</think>\n\n{TINY_ANSWER}"
TINY_PROMPT_IDS = (151646, 151644, 6023, 151645)
TINY_REPLY_IDS = (
    151648, 198, 32313, 11, 279, 1196, 2727, 23811, 13, 358, 1265, 40786, 1105, 1182, 624,
    151649, 271, 9707, 0, 2585, 646, 358, 1492, 498, 3351, 30, 151643,
)  # fmt: skip


def gguf_cache_dir() -> Path:
    """The test session's converted-GGUF cache (set up in tests/conftest.py)."""
    return Path(os.environ["R1SERVE_CACHE_DIR"]) / "gguf"
