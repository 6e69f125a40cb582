"""`r1serve users ...` and `r1serve keys ...` against the database from settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1serve.cli import _register, app
from r1serve.settings import Settings
from r1serve.storage import Database
from r1serve.storage.repositories import UserRepository


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("R1SERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("R1SERVE_DATABASE_URL", database_url)
    _register()
    return CliRunner()


def _run(cli: CliRunner, *args: str, stdin: str | None = None, ok: bool = True) -> str:
    result = cli.invoke(app, list(args), input=stdin)
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_users_add_list_role_disable_enable_passwd(cli: CliRunner) -> None:
    assert "created user 'ada'" in _run(cli, "users", "add", "Ada", stdin="ada-password\n" * 2)
    out = _run(cli, "users", "add", "root", "--role", "admin", "--generate")
    assert "created admin 'root'" in out and "password (shown only now):" in out
    listing = _run(cli, "users", "list")
    assert "ada" in listing and "root" in listing and "admin" in listing
    assert "'ada' is now admin" in _run(cli, "users", "role", "ada", "admin")
    assert "disabled 'ada'" in _run(cli, "users", "disable", "ada")
    assert "disabled" in _run(cli, "users", "list")
    assert "enabled 'ada'" in _run(cli, "users", "enable", "ada")
    out = _run(cli, "users", "passwd", "ada", "--password-stdin", stdin="new-password-1\n")
    assert "web sessions have ended" in out


def test_user_errors_are_one_line_and_exit_1(cli: CliRunner) -> None:
    _run(cli, "users", "add", "ada", "--password-stdin", stdin="ada-password\n")
    out = _run(cli, "users", "add", "ada", "--password-stdin", stdin="ada-password\n", ok=False)
    assert out.strip() == "r1serve: error: user 'ada' already exists"
    out = _run(cli, "users", "add", "bob", "--password-stdin", stdin="short\n", ok=False)
    assert "at least 8" in out
    assert "no user named 'nobody'" in _run(cli, "users", "disable", "nobody", ok=False)
    assert "role must be one of" in _run(cli, "users", "role", "ada", "root", ok=False)
    assert "Traceback" not in out


def test_user_quota_show_set_and_clear(cli: CliRunner) -> None:
    _run(cli, "users", "add", "ada", "--generate")
    assert "requests/min no limit, tokens/day (UTC) no limit" in _run(cli, "users", "quota", "ada")
    out = _run(cli, "users", "quota", "ada", "--rpm", "30", "--tokens-per-day", "100_000")
    assert "requests/min 30, tokens/day (UTC) 100,000" in out
    out = _run(cli, "users", "quota", "ada", "--rpm", "none")
    assert "requests/min no limit, tokens/day (UTC) 100,000" in out
    assert "must be at least 1" in _run(cli, "users", "quota", "ada", "--rpm", "0", ok=False)


def test_keys_create_list_revoke(cli: CliRunner, database_url: str, tmp_path: Path) -> None:
    _run(cli, "users", "add", "ada", "--generate")
    result = cli.invoke(
        app,
        [
            "keys",
            "create",
            "--user",
            "ada",
            "--name",
            "ci",
            "--model",
            "tiny",
            "--rpm",
            "5",
            "--expires-in-days",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("r1s-") and "shown only now" in result.stderr
    listing = _run(cli, "keys", "list", "--user", "ada")
    assert key[:12] in listing and key not in listing and "active" in listing
    assert "tiny" in listing and "ci" in listing
    assert f"revoked {key[:12]}" in _run(cli, "keys", "revoke", key[:12])
    assert "revoked" in _run(cli, "keys", "list")
    assert "no API key with prefix" in _run(cli, "keys", "revoke", "r1s-nothere1", ok=False)
    assert "give a key id" in _run(cli, "keys", "revoke", "what", ok=False)

    from r1serve.auth import AuthService

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    database = Database.open(settings)
    try:
        service = AuthService(settings, database)
        with pytest.raises(Exception, match="revoked"):
            service.keys.authenticate(key)
        with database.read() as session:
            assert UserRepository(session).by_username("ada") is not None
    finally:
        database.close()
