"""The docs stay true: every setting documented, both READMEs give the same quick start."""

from __future__ import annotations

from pathlib import Path

from r1serve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    missing = [n for n in Settings.model_fields if f"`R1SERVE_{n.upper()}`" not in text]
    assert missing == []


def test_readmes_quick_start_is_make_run_and_make_test() -> None:
    for name in ("README.md", "README.zh-CN.md"):
        text = (ROOT / name).read_text()
        assert "make run" in text and "make test" in text, name
        assert text.index("make run") < text.index("make test"), name


def test_readmes_cover_the_same_commands() -> None:
    english = (ROOT / "README.md").read_text()
    chinese = (ROOT / "README.zh-CN.md").read_text()
    for command in ("r1serve serve", "r1serve chat", "r1serve bench", "r1serve models",
                    "r1serve pull", "r1serve users", "r1serve keys", "docs/history.md",
                    "r1serve ls", "r1serve rm", "/v1/chat/completions", "/stream-generate",
                    "/generate", "reasoning_content"):  # fmt: skip
        assert command in english, command
        assert command in chinese, command


def test_history_docs_give_the_real_dead_writer_delays() -> None:
    """#14: the docs said "at once" while a same-machine dead writer waited for a sweep."""
    import inspect

    from r1serve.conversations.replies import ReplyManager

    defaults = inspect.signature(ReplyManager).parameters
    sweep, lease = defaults["sweep_interval_s"].default, defaults["lease_s"].default
    english = (ROOT / "docs" / "history.md").read_text()
    section = english[english.index("### Several replicas") :]
    section = section[: section.index("###", 4)]
    assert "at once" not in section
    assert f"every {sweep:g} seconds" in section
    assert f"{lease:g} seconds old" in section
    assert f"约 {sweep:g} 秒内" in english and f"超过 {lease:g} 秒" in english


def test_readmes_show_the_ollama_api_and_tested_client_settings() -> None:
    for name in ("README.md", "README.zh-CN.md"):
        text = (ROOT / name).read_text()
        for needle in ("/api/chat", "ollama.Client(", "Bearer r1s-", "docs/ollama.md",
                       "Open WebUI", "ChatDeepSeek", "ChatOpenAI", "LiteLLM",
                       "r1serve users passwd", "--port", "R1SERVE_ALLOWED_HOSTS"):  # fmt: skip
            assert needle in text, (name, needle)


def test_models_file_docs_parse_and_name_every_per_model_option() -> None:
    """The models file's example is a file r1serve accepts, and its options are all listed."""
    import re

    from r1serve.engine.models_file import LOCAL_OPTIONS, REPLY_OPTIONS, parse_models_toml

    for doc, readme in (
        ("models-file.md", "README.md"),
        ("models-file.zh-CN.md", "README.zh-CN.md"),
    ):
        assert f"docs/{doc}" in (ROOT / readme).read_text(), readme
        text = (ROOT / "docs" / doc).read_text()
        example = re.search(r"```toml\n(.*?)```", text, re.S)
        assert example is not None, doc
        specs = parse_models_toml(example.group(1), doc)
        assert [spec.engine for spec in specs] == ["llamacpp", "transformers", "upstream"]
        for option in (*LOCAL_OPTIONS, *REPLY_OPTIONS, "--serve", "--models"):
            assert f"`{option}`" in text or option in text, (doc, option)
