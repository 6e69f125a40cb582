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


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


REPLICAS = {"scale-out.md": "Several r1serve replicas", "scale-out.zh-CN.md": "多个 r1serve 副本"}


def test_both_languages_have_the_replicas_section_their_links_point_to() -> None:
    for doc, heading in REPLICAS.items():
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
        links = re.findall(r"\]\(#([^)]+)\)", text)
        assert _slug(heading) in links, doc  # the vLLM fleet set-up links to it
        assert [link for link in links if link not in headings] == [], doc
        section = _section(text, heading)
        for needle in ("--database-url", "--redis-url", "--redis-key-prefix", "R1SERVE_REDIS_URL",
                       "Last-Event-ID", "reply_in_progress", "stopped", "proxy_buffering off",
                       "does not answer", "tests/api/test_replicas.py"):  # fmt: skip
            assert needle in section, (doc, needle)
    settings = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert "scale-out.md#" + _slug(REPLICAS["scale-out.md"]) in settings


def test_every_serve_command_in_the_scale_out_docs_uses_real_flags() -> None:
    from typer.main import get_command

    from r1serve.cli import _register, app

    _register()
    serve = get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {name for param in serve.params for name in param.opts}
    for doc in REPLICAS:
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if "r1serve serve" not in line:
                    continue
                flags = re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", line.split("r1serve serve")[1])
                assert flags and set(flags) <= options, (doc, line, set(flags) - options)
