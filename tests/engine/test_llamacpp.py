"""The llama.cpp backend's own promises: its internal listener is closed to anyone without the key,
and ``auto`` picks it for a .gguf file."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from r1serve.engine.llamacpp.engine import LlamaCppEngine
from r1serve.engine.registry import build_engine, choose_backend
from r1serve.engine.source import resolve_model_source
from support.api import make_settings
from support.models import TINY_R1_GGUF, TINY_R1_HF

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    built = build_engine(make_settings(model=str(TINY_R1_GGUF), max_num_seqs=1, max_model_len=128))
    assert built.summary[0] == "engine: llamacpp"
    assert isinstance(built.engine, LlamaCppEngine)
    yield built.engine


def status(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_internal_listener_is_loopback_and_refuses_requests_without_the_key(
    engine: LlamaCppEngine,
) -> None:
    address = engine.listening_address
    assert address is not None
    assert urlsplit(address).hostname == "127.0.0.1"
    for path in ("/v1/models", "/completion", "/v1/chat/completions"):
        assert status(address + path, {}) == 401
        assert status(address + path, {"Authorization": "Bearer guess"}) == 401


def test_auto_is_llamacpp_for_gguf_and_transformers_for_hf_folders() -> None:
    assert choose_backend("auto", resolve_model_source(str(TINY_R1_GGUF))) == "llamacpp"
    assert choose_backend("auto", resolve_model_source(str(TINY_R1_HF))) == "transformers"
    assert choose_backend("transformers", resolve_model_source(str(TINY_R1_GGUF))) == "transformers"


LEAN = """
import asyncio, sys, tempfile
from r1serve.api.app import create_app
from r1serve.engine.protocol import GenerationRequest, SamplingParams
from r1serve.engine.registry import build_engine
from r1serve.settings import Settings

settings = Settings(_env_file=None, model=sys.argv[1], data_dir=tempfile.mkdtemp(), auth=False,
                    max_num_seqs=1, max_model_len=128)
built = build_engine(settings)
create_app(settings, built.engine)

async def main():
    engine = built.engine
    await engine.start()
    try:
        ids = engine.tokenizer.encode("hi")
        stream = await engine.submit(GenerationRequest(
            request_id="lean", prompt_token_ids=tuple(ids), params=SamplingParams(max_tokens=4)))
        async for _ in stream:
            pass
    finally:
        await engine.close()

asyncio.run(main())
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def test_the_llamacpp_engine_never_loads_torch_or_transformers() -> None:
    """They are ~200 MB of resident memory a GGUF served by llama.cpp does not need."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LEAN, str(TINY_R1_GGUF)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
