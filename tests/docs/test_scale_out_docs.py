"""docs/scale-out.md and its Chinese twin describe the same upstream flags and metrics."""

from __future__ import annotations

from pathlib import Path

from r1serve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_both_languages_name_the_upstream_flags_and_metrics() -> None:
    flags = [f"--{n.replace('_', '-')}" for n in Settings.model_fields if n.startswith("upstream_")]
    names = ["--engine upstream", *flags, "r1serve_upstream_up", "r1serve_upstream_errors_total",
             "reasoning_content", "Retry-After", "/tokenize"]  # fmt: skip
    for doc in ("scale-out.md", "scale-out.zh-CN.md"):
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        missing = [n for n in names if n not in text]
        assert missing == [], doc
