"""Two real ``r1serve serve`` replicas on one fresh PostgreSQL database and the local Redis.

Both serve the same upstream model (a third process, r1serve on the scripted fake engine, slow
enough that a reply is still running while the test moves between replicas). A reply started
on A is reattached on B with Last-Event-ID and arrives whole, once; a Stop on B stops it on A
(whose upstream request is aborted); a second reply is refused on B while A writes one; the
login throttle and a key's quotas count the requests of both; history written on A is B's too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.api import free_port
from support.conversations import Event, create, detail, events_of, iter_events, joined_text, take
from support.replicas import fresh_postgres, redis_prefix
from support.upstreams import ROOT, R1ServeProcess, fake_upstream

pytestmark = pytest.mark.slow  # starts three server processes

ADMIN_PASSWORD = "replica-admin-pw-1"
SLOW = "Word after word, "  # repeated until max_tokens
TIMEOUT = httpx.Timeout(120, connect=10)


@dataclass
class Replicas:
    a: R1ServeProcess
    b: R1ServeProcess
    upstream: R1ServeProcess
    key: str  # the admin's API key, good on both

    def client(self, replica: R1ServeProcess, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=replica.url, headers=headers, timeout=TIMEOUT)


def replica(upstream: R1ServeProcess, database: str, redis_url: str, prefix: str) -> R1ServeProcess:
    args = ["-m", "r1serve", "serve", "--engine", "upstream",
            "--upstream-url", f"{upstream.url}/v1", "--upstream-tokenizer", "estimate",
            "--database-url", database, "--redis-url", redis_url,
            "--redis-key-prefix", prefix, "--log-level", "warning"]  # fmt: skip
    env = {
        "R1SERVE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "R1SERVE_LOGIN_MAX_FAILURES_PER_ACCOUNT": "3",
        "R1SERVE_USAGE_FLUSH_INTERVAL_S": "0.1",
        "R1SERVE_AUTH_RECHECK_S": "0.5",
    }
    return R1ServeProcess(args, env=env)


def new_key(replica: R1ServeProcess, **quota: int) -> dict[str, Any]:
    """A new API key of the admin (with ``quota``), made through a web login on ``replica``."""
    with httpx.Client(base_url=replica.url, timeout=TIMEOUT) as http:
        login = http.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        csrf = login.json()["user"]["csrf_token"]
        body = {"name": "test", **quota}
        made = http.post("/api/keys", json=body, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        key: dict[str, Any] = made.json()
        return key


def admin_key(replica: R1ServeProcess, **quota: int) -> str:
    return str(new_key(replica, **quota)["key"])


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    with fresh_postgres() as database_url, redis_prefix() as (redis_url, prefix):
        upstream = fake_upstream(SLOW, delay_s=0.02, repeat=True)
        a = replica(upstream, database_url, redis_url, prefix)
        b = replica(upstream, database_url, redis_url, prefix)
        try:
            upstream.start()
            a.start()  # first: it creates the schema and the admin
            b.start()
            yield Replicas(a, b, upstream, admin_key(a))
        finally:
            for process in (b, a, upstream):
                process.stop()
    for process in (a, b):
        assert "Traceback" not in process.log.read_text(), process.log.read_text()[-3000:]


def _text(events: list[Event]) -> str:
    return "".join(joined_text(events))


def test_a_reply_started_on_a_is_reattached_on_b_whole_and_once(replicas: Replicas) -> None:
    with replicas.client(replicas.a) as on_a, replicas.client(replicas.b) as on_b:
        cid = create(on_a, settings={"max_tokens": 400, "temperature": 0})["id"]
        with on_a.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as r:
            assert r.status_code == 200
            seen = take(iter_events(r.iter_lines()), 30)  # then this client goes away
        message_id = seen[0].json()["assistant_message"]["id"]
        last = {"Last-Event-ID": str(seen[-1].id)}
        # History written on A is on B, the reply still running.
        shown = detail(on_b, cid)
        assert shown["active_reply"]["message_id"] == message_id
        assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
        stream = f"/api/conversations/{cid}/messages/{message_id}/stream"
        with ThreadPoolExecutor(2) as pool:  # the writer's own replay and B's, side by side
            local = pool.submit(lambda: events_of(on_a.get(stream, headers=last).text))
            relayed = pool.submit(lambda: events_of(on_b.get(stream, headers=last).text))
            from_a, from_b = local.result(), relayed.result()
        final = detail(on_b, cid)["messages"][-1]
        assert final["status"] == "complete"
        assert _text(seen) + _text(from_b) == final["reasoning"] + final["content"]
        assert _text(from_b) == _text(from_a)
        ids_b = [event.id for event in from_b]
        assert ids_b == sorted(set(ids_b)) and ids_b[0] > seen[-1].id
        assert set(ids_b) <= {event.id for event in from_a}  # the writer's ids
        assert from_b[-2:] == from_a[-2:]  # the same done event and [DONE]
        assert [e.name for e in from_b[-2:]] == ["done", None] and from_b[-1].data == "[DONE]"
        assert len([e for e in from_b if e.name is None]) > 3  # followed live, not one replay


def test_stop_on_b_stops_the_reply_that_a_writes(replicas: Replicas) -> None:
    aborted = replicas.upstream.metric("r1serve_requests_finished_total", finish_reason="abort")
    with replicas.client(replicas.a) as on_a, replicas.client(replicas.b) as on_b:
        cid = create(on_a, settings={"max_tokens": 4000})["id"]
        events: list[Event] = []
        started = threading.Event()

        def follow() -> None:
            path = f"/api/conversations/{cid}/messages"
            with on_a.stream("POST", path, json={"content": "hi"}) as response:
                for event in iter_events(response.iter_lines()):
                    events.append(event)
                    if len(events) > 5:
                        started.set()
            started.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert started.wait(120) and events[0].name == "start", events[:3]
        message_id = events[0].json()["assistant_message"]["id"]
        # While A writes it, no second reply in the conversation, on either replica.
        refused = on_b.post(f"/api/conversations/{cid}/messages", json={"content": "more"})
        assert refused.status_code == 409 and "reply_in_progress" in refused.text
        stopped = on_b.post(f"/api/conversations/{cid}/messages/{message_id}/stop")
        assert stopped.status_code == 200, stopped.text
        reply = stopped.json()
        assert reply["status"] == "stopped" and reply["content"].startswith("Word after word")
        reader.join(60)
        assert not reader.is_alive()
        done = next(e for e in events if e.name == "done").json()["message"]
        assert (done["status"], done["reasoning"], done["content"]) == (
            "stopped", reply["reasoning"], reply["content"]
        )  # fmt: skip
        assert events[-1].data == "[DONE]" and done["finish_reason"] == "abort"
        upstream = replicas.upstream
        metric = "r1serve_requests_finished_total"
        for _ in range(100):  # A's upstream request was aborted, not left running
            if upstream.metric(metric, finish_reason="abort") > aborted:
                break
            threading.Event().wait(0.1)
        assert upstream.metric(metric, finish_reason="abort") > aborted
        on_b.patch(f"/api/conversations/{cid}", json={"settings": {"max_tokens": 5}})
        again = on_b.post(f"/api/conversations/{cid}/messages", json={"content": "more"})
        assert again.status_code == 200  # the conversation goes on, on B this time
        assert [m["status"] for m in detail(on_a, cid)["messages"]][-1] == "complete"


def test_a_key_revoked_on_b_stops_its_reply_on_a(replicas: Replicas) -> None:
    """The writer re-checks its callers in the shared database; B's follower gets the writer's
    own error event (access_revoked) through Redis."""
    made = new_key(replicas.a)
    with replicas.client(replicas.a, made["key"]) as owner, replicas.client(replicas.b) as on_b:
        cid = create(owner, settings={"max_tokens": 4000})["id"]
        path = f"/api/conversations/{cid}/messages"
        with owner.stream("POST", path, json={"content": "hi"}) as response:
            first = take(iter_events(response.iter_lines()), 3)
        message_id = first[0].json()["assistant_message"]["id"]
        stream = f"/api/conversations/{cid}/messages/{message_id}/stream"
        with on_b.stream("GET", stream) as followed:  # the same user, another key
            events = iter_events(followed.iter_lines())
            seen = take(events, 5)
            assert on_b.delete(f"/api/keys/{made['id']}").status_code == 200
            seen += list(events)
        saved = detail(on_b, cid)["messages"][-1]
    error = next(e for e in seen if e.name == "error").json()
    assert error["error"]["code"] == "access_revoked", error
    assert error["message"]["status"] == saved["status"] == "stopped"
    assert "revoked" in (saved["error"] or "") and seen[-1].data == "[DONE]"


def test_the_login_throttle_counts_failures_on_both_replicas(replicas: Replicas) -> None:
    name = "nobody-on-two-replicas"
    codes = []
    for replica in (replicas.a, replicas.b, replicas.a, replicas.b, replicas.a):
        response = httpx.post(f"{replica.url}/api/auth/login", timeout=TIMEOUT,
                              json={"username": name, "password": "wrong"})  # fmt: skip
        codes.append(response.status_code)
    assert codes == [401, 401, 401, 429, 429]  # 3 failures allowed, counted together
    assert "login_throttled" in response.text


def test_a_keys_quotas_hold_across_both_replicas(replicas: Replicas) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    limited = admin_key(replicas.a, requests_per_minute=2)
    codes = []
    for replica in (replicas.a, replicas.b, replicas.a, replicas.b):
        with replicas.client(replica, limited) as http:
            response = http.post("/v1/chat/completions", json=body)
            codes.append(response.status_code)
    assert codes == [200, 200, 429, 429]
    assert "requests_per_minute_exceeded" in response.text
    assert response.headers["Retry-After"].isdigit()

    budget = admin_key(replicas.b, tokens_per_day=20)
    with replicas.client(replicas.a, budget) as on_a, replicas.client(replicas.b, budget) as on_b:
        assert on_a.post("/v1/chat/completions", json={**body, "max_tokens": 40}).status_code == 200
        for _ in range(200):  # until A's usage writer has stored it
            quota = on_b.get("/api/usage").json()["quota"]
            if quota["key_tokens_today"] >= 20:
                break
            threading.Event().wait(0.1)
        over = on_b.post("/v1/chat/completions", json=body)
        assert over.status_code == 429 and "tokens_per_day_exceeded" in over.text


def test_serve_refuses_to_start_when_redis_does_not_answer(tmp_path: Path) -> None:
    """A clear one-line error at start-up, before any model is loaded, not a traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-m", "r1serve", "serve", "--no-auth", "--redis-url", url,
         "--model", str(tmp_path / "no-such-model")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
                          "R1SERVE_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"Redis at {url} (--redis-url) does not answer" in result.stderr
    assert "Traceback" not in result.stderr


def _saved(message: dict[str, Any]) -> str:
    return (message.get("reasoning") or "") + (message.get("content") or "")


def test_a_replica_killed_mid_reply_leaves_it_to_the_other_to_end(replicas: Replicas) -> None:
    """Last (A dies): B follows A's reply; A is killed; B's sweep marks the reply incomplete
    with its saved text, and B's follower ends with that, well-formed."""
    with replicas.client(replicas.a) as on_a, replicas.client(replicas.b) as on_b:
        cid = create(on_a, settings={"max_tokens": 4000})["id"]
        with on_a.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as r:
            first = take(iter_events(r.iter_lines()), 3)
        message_id = first[0].json()["assistant_message"]["id"]
        stream = f"/api/conversations/{cid}/messages/{message_id}/stream"
        with on_b.stream("GET", stream) as followed:
            events = iter_events(followed.iter_lines())
            seen = take(events, 20)
            while not _saved(detail(on_b, cid)["messages"][-1]):  # A's first periodic save
                seen += take(events, 5)  # wait on the reply's progress, not a clock
            replicas.a.kill()
            seen += list(events)  # ends once B's sweeper (every 15 s) has marked it
        final = detail(on_b, cid)["messages"][-1]
    assert seen[0].name == "start" and seen[-1].data == "[DONE]"
    done = next(e for e in seen if e.name == "done").json()["message"]
    assert done["status"] == final["status"] == "incomplete"
    assert _saved(final) and _text(seen).startswith(_saved(final))
