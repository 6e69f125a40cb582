"""Shared test fixtures: paths to the test models."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TINY_R1_DIR = FIXTURES / "tiny-r1"
TINY_R1_HF = TINY_R1_DIR / "hf"
TINY_R1_GGUF = TINY_R1_DIR / "tiny-r1.gguf"

# The tiny model's one reply (see fixtures/tiny-r1/UPSTREAM_README.md).
TINY_REASONING = "Okay, the user says hello. I should greet them back."
TINY_ANSWER = "Hello! How can I help you today?"
TINY_RAW = f"<think>\n{TINY_REASONING}\n</think>\n\n{TINY_ANSWER}"


@pytest.fixture(scope="session")
def tiny_r1_hf() -> Path:
    return TINY_R1_HF


@pytest.fixture(scope="session")
def tiny_r1_gguf() -> Path:
    return TINY_R1_GGUF
