"""Case 24: ``kill -9`` of a real ``r1serve serve`` process in the middle of a reply.

The tiny R1 model runs with ``ignore_eos`` and a long max_tokens so the reply is still being
generated and saved when the process is killed. Afterwards the SQLite file passes its integrity
check, the user's message is there, and the partial reply is kept and marked incomplete on the
next start.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import r1serve
from support.api import free_port
from support.conversations import (
    create,
    detail,
    events_of,
    final_message,
    iter_events,
    joined_text,
    take,
)
from support.models import TINY_R1_HF

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 180


@contextmanager
def serve(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``r1serve serve`` of the tiny model in its own process; terminated at the end."""
    port = free_port()
    src = Path(r1serve.__file__).parents[1]
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "R1SERVE_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "r1serve", "serve", "--model", str(TINY_R1_HF)]
    command += ["--no-auth", "--port", str(port), "--threads", "1", "--log-level", "warning"]
    log = (data_dir / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (data_dir / f"server-{port}.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.25)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _rows(database: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(database)) as connection:
        return connection.execute(
            "SELECT role, status, content, reasoning FROM messages ORDER BY role DESC"
        ).fetchall()


def _saved_reply_length(database: Path) -> int:
    try:
        rows = _rows(database)
    except sqlite3.OperationalError:  # locked for a moment by the server's write
        return 0
    return sum(len(r[2]) + len(r[3]) for r in rows if r[0] == "assistant")


def test_kill_9_mid_reply_keeps_the_message_and_the_partial_reply(tmp_path: Path) -> None:
    database = tmp_path / "r1serve.db"
    with serve(tmp_path) as (proc, url), httpx.Client(base_url=url, timeout=30) as http:
        settings = {"max_tokens": 3000, "ignore_eos": True, "temperature": 0}
        cid = create(http, settings=settings)["id"]
        path = f"/api/conversations/{cid}/messages"
        with http.stream("POST", path, json={"content": "hi"}) as response:
            events = iter_events(response.iter_lines())
            streamed = take(events, 40)
            deadline = time.monotonic() + 60
            while _saved_reply_length(database) < 20:  # saved while it streams
                assert time.monotonic() < deadline, "nothing of the reply was saved"
                streamed += take(events, 5)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            with pytest.raises(httpx.HTTPError):
                streamed += list(events)  # the stream breaks off; it never completes

    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    user, assistant = _rows(database)  # ordered by role, user first
    assert user[:3] == ("user", "complete", "hi")
    assert assistant[1] == "generating"  # nobody could mark it
    saved = assistant[3] + assistant[2]
    seen = "".join(joined_text(streamed))
    assert saved and (seen.startswith(saved) or saved.startswith(seen))

    with serve(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=30) as http:
        question, reply = detail(http, cid)["messages"]
        assert (question["content"], question["status"]) == ("hi", "complete")
        assert reply["status"] == "incomplete"
        assert (reply["reasoning"], reply["content"]) == (assistant[3], assistant[2])
        assert detail(http, cid)["active_reply"] is None
        # Reattaching from the last event seen, which may be past the saved text (#14): the
        # stream still ends with done (the saved, incomplete reply) and [DONE], not empty.
        stream = f"/api/conversations/{cid}/messages/{reply['id']}/stream"
        last = {"Last-Event-ID": str(streamed[-1].id)}
        resumed = events_of(http.get(stream, headers=last).text)
        assert [e.name for e in resumed][-2:] == ["done", None], resumed[-3:]
        assert resumed[-1].data == "[DONE]"
        assert final_message(resumed)["status"] == "incomplete"
        # The conversation goes on.
        http.patch(f"/api/conversations/{cid}", json={"settings": {"max_tokens": 5}})
        after = http.post(f"/api/conversations/{cid}/messages", json={"content": "again"})
        assert after.status_code == 200
        assert [m["status"] for m in detail(http, cid)["messages"]][-1] == "complete"


def test_sigterm_ends_a_running_v1_stream_with_an_error_event_and_done(tmp_path: Path) -> None:
    """#14: ``r1serve serve`` told to stop (SIGTERM, as systemd or docker do) ends the streams
    it is sending with OpenAI's error shape and ``[DONE]``, not a cut body."""
    with serve(tmp_path) as (proc, url), httpx.Client(base_url=url, timeout=30) as http:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                "max_tokens": 3000, "ignore_eos": True}  # fmt: skip
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            payloads = [line[6:] for line in take_lines(lines, 20) if line.startswith("data: ")]
            proc.send_signal(signal.SIGTERM)
            payloads += [line[6:] for line in lines if line.startswith("data: ")]
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert proc.wait(timeout=30) == -signal.SIGTERM
    assert payloads[-1] == "[DONE]", payloads[-3:]
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"


def take_lines(lines: Iterator[str], count: int) -> list[str]:
    return [next(lines) for _ in range(count)]
