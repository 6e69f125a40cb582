"""Shared fixtures: test model paths, the app over the scripted fake engine, and databases."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r1serve.api.app import create_app
from r1serve.auth import AuthService, close_accounts
from r1serve.engine.fake import FakeEngine
from r1serve.settings import Settings
from support.accounts import test_accounts
from support.api import REPLY, LiveServer, make_settings
from support.databases import (  # noqa: F401 - fixtures, registered by importing them here
    database,
    database_url,
    db_settings,
    postgres_run_url,
)
from support.models import TINY_R1_GGUF, TINY_R1_HF

# Tests never touch the user's data directory. One directory per session, so the converted-GGUF
# cache built by the first GGUF load speeds up the later ones.
DATA_DIR = tempfile.mkdtemp(prefix="r1serve-test-data-")
os.environ["R1SERVE_DATA_DIR"] = DATA_DIR
os.environ["R1SERVE_CACHE_DIR"] = os.path.join(DATA_DIR, "cache")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_r1_hf() -> Path:
    return TINY_R1_HF


@pytest.fixture(scope="session")
def tiny_r1_gguf() -> Path:
    return TINY_R1_GGUF


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[TestClient, FakeEngine]]]:
    """Build an app over a FakeEngine(replies, **engine_kwargs); closed after the test."""
    clients: list[TestClient] = []
    opened: list[AuthService] = []

    def build(
        replies: Any = REPLY, settings: Settings | None = None, **engine_kwargs: Any
    ) -> tuple[TestClient, FakeEngine]:
        engine = FakeEngine(replies, **engine_kwargs)
        settings = settings or make_settings()
        accounts = test_accounts(settings)  # cheap argon2; the app does not own it
        opened.append(accounts)
        client = TestClient(create_app(settings, engine, accounts))
        client.__enter__()
        clients.append(client)
        return client, engine

    yield build
    for client in clients:
        client.__exit__(None, None, None)
    for accounts in opened:
        close_accounts(accounts)


@pytest.fixture
def client(make_client: Callable[..., tuple[TestClient, FakeEngine]]) -> TestClient:
    return make_client()[0]


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """Start the app under uvicorn in a thread; stopped after the test."""
    servers: list[LiveServer] = []

    def start(replies: Any = REPLY, settings: Settings | None = None, **kw: Any) -> LiveServer:
        server = LiveServer(FakeEngine(replies, **kw), settings).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
