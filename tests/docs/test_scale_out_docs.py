"""docs/scale-out.md and its Chinese twin describe the same upstream flags and metrics."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from r1serve.engine.models_file import parse_models_toml
from r1serve.engine.upstream.config import UpstreamConfig
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


def _toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_every_models_file_in_the_scale_out_docs_is_valid() -> None:
    """Each models file shown parses, and its upstream entries make a valid UpstreamConfig."""
    for doc in ("scale-out.md", "scale-out.zh-CN.md"):
        blocks = _toml_blocks((ROOT / "docs" / doc).read_text(encoding="utf-8"))
        assert len(blocks) >= 2, doc
        for block in blocks:
            for spec in parse_models_toml(block, doc):
                if spec.engine != "upstream":
                    continue
                options = dict(spec.upstream)
                config = UpstreamConfig(**{**options, "urls": tuple(options["urls"])})
                assert config.urls and config.api_key_env, (doc, spec.name)
                assert {f.name for f in fields(config)} >= set(options), (doc, spec.name)
