"""Shared fixtures: paths to the test models."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.models import TINY_R1_GGUF, TINY_R1_HF


@pytest.fixture(scope="session")
def tiny_r1_hf() -> Path:
    return TINY_R1_HF


@pytest.fixture(scope="session")
def tiny_r1_gguf() -> Path:
    return TINY_R1_GGUF
