"""``r1serve serve`` keeps start-up's objects out of the garbage collector's full passes.

A FastAPI app with r1serve's routes and schemas is some 300,000 tracked objects; every full
collection walked them all with the event loop stopped (150-210 ms measured on the 2-core
machine), a stall for every stream and /health. After start-up they are frozen (gc.freeze);
refcounting still frees what it frees.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI

from r1serve.api import server as server_module
from r1serve.api.server import DrainingServer, freeze_startup_objects, release_free_heap
from support.api import free_port


def test_freezing_leaves_nothing_for_a_full_pass_to_walk() -> None:
    kept = [[i] for i in range(10_000)]  # live objects, as start-up leaves them
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= len(kept)
        tracked = len(gc.get_objects())
        assert tracked < 10_000, tracked  # the full pass no longer sees them
    finally:
        gc.unfreeze()


def test_freed_heap_goes_back_to_the_system() -> None:
    import psutil

    blocks = [bytearray(64 * 1024 - 64) for _ in range(2_000)]  # ~128 MB on glibc's heap
    top = blocks.pop()  # the last block keeps the heap's top: free() alone returns nothing
    del blocks
    before = psutil.Process().memory_info().rss
    assert release_free_heap()  # glibc (Linux), as on every machine r1serve is tested on
    assert before - psutil.Process().memory_info().rss >= 64 * 1024**2
    del top


@pytest.mark.parametrize("freeze", [True, False])
def test_the_server_freezes_once_it_has_started(
    monkeypatch: pytest.MonkeyPatch, freeze: bool
) -> None:
    calls: list[float] = []
    monkeypatch.setattr(server_module, "freeze_startup_objects", lambda: calls.append(1.0))
    config = uvicorn.Config(FastAPI(), port=free_port(), log_level="warning", lifespan="on")
    server = DrainingServer(config, freeze_gc=freeze)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.02)
        assert server.started
        assert calls == ([1.0] if freeze else [])
    finally:
        server.should_exit = True
        thread.join(30)
