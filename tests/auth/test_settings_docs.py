"""Every account and storage setting has a description and a line in docs/auth.md."""

from __future__ import annotations

from pathlib import Path

from r1serve.settings import Settings

DOC = Path(__file__).parents[2] / "docs" / "auth.md"
ACCOUNT_SETTINGS = [
    "database_url",
    "database_busy_timeout_s",
    "auth",
    "admin_password",
    "session_ttl_s",
    "login_max_failures_per_account",
    "login_max_failures_per_ip",
    "login_window_s",
    "default_requests_per_minute",
    "default_tokens_per_day",
    "auth_recheck_s",
    "metrics_token",
    "usage_flush_interval_s",
    "allowed_hosts",
    "cors_origins",
]


def test_account_settings_are_described_and_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in ACCOUNT_SETTINGS:
        field = Settings.model_fields[name]
        assert field.description, name
        assert f"`R1SERVE_{name.upper()}`" in text, name
