"""pytest fixtures around the fake hub, imported by the conftest of each test folder using it."""

from __future__ import annotations

from collections.abc import Iterator

import huggingface_hub
import pytest
from huggingface_hub import constants

from fakehub.server import FakeHub, running_hub

FAKE_TOKEN = "hf_r1serve_fake_test_token"


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake hub set as HF_ENDPOINT, with a fake token and offline mode lifted."""
    # Tests run with HF_HUB_OFFLINE=1 so nothing reaches the real hub; only this local server
    # is reachable, and only HF_ENDPOINT-style URLs pointing at it are used.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    huggingface_hub.close_session()  # a fresh client reads the proxy environment again
    with running_hub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub
    huggingface_hub.close_session()
    assert hub.server_errors == []


@pytest.fixture
def second_hub() -> Iterator[FakeHub]:
    """Another fake hub on another port (another origin): a CDN or a second mirror."""
    with running_hub() as hub:
        yield hub
    assert hub.server_errors == []
