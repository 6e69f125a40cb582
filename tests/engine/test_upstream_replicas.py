"""Real r1serve processes as upstreams of a third r1serve: a replica killed mid-run costs only
its in-flight streams (a clear error), new requests go to the other, it is re-admitted once it
is back; a client that goes away cancels the upstream's request; the serve command takes
``--engine upstream`` and never shows the key; tiny-r1's split arrives exactly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from r1serve.engine.upstream import UpstreamConfig, UpstreamEngine, build_upstream
from support.api import LiveServer, make_settings, sse_payloads, wait_for
from support.models import TINY_ANSWER, TINY_REASONING
from support.upstreams import R1ServeProcess, fake_upstream, tiny_r1_upstream

pytestmark = pytest.mark.slow  # starts r1serve processes

HI = [{"role": "user", "content": "hi"}]
SLOW = "<think>\nStill thinking.\n</think>\n\nword "  # repeated until max_tokens


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[R1ServeProcess, R1ServeProcess]]:
    a, b = (fake_upstream(SLOW, delay_s=0.02, repeat=True).launch() for _ in range(2))
    try:
        yield a.wait(), b.wait()
    finally:
        a.stop()
        b.stop()


def gateway(*urls: str, **config: object) -> LiveServer:
    engine = build_upstream(UpstreamConfig(urls=urls, **config))  # type: ignore[arg-type]
    return LiveServer(engine, make_settings(allowed_hosts=["127.0.0.1"])).__enter__()  # type: ignore[arg-type]


class StreamReader(threading.Thread):
    """One streamed chat through the gateway, read in a thread: has it started, how it ended."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.started = threading.Event()
        self.payloads: list[str] = []

    def run(self) -> None:
        body = {"messages": HI, "stream": True, "max_tokens": self.max_tokens}
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body,
                          timeout=60) as response:  # fmt: skip
            for line in response.iter_lines():
                if line.startswith("data:"):
                    self.payloads.append(line[5:].strip())
                    if '"content":"word' in line or '"reasoning"' in line:
                        self.started.set()

    def error(self) -> str | None:
        for payload in self.payloads:
            if payload.startswith('{"error"'):
                return str(json.loads(payload)["error"]["message"])
        return None


def test_a_killed_replica_costs_only_its_inflight_streams(
    pair: tuple[R1ServeProcess, R1ServeProcess],
) -> None:
    a, b = pair
    server = gateway(f"{a.url}/v1", f"{b.url}/v1", health_interval_s=0.3)
    engine: UpstreamEngine = server.engine  # type: ignore[assignment]
    try:
        readers = [StreamReader(server.url, 600) for _ in range(4)]
        for reader in readers:
            reader.start()
        assert all(r.started.wait(60) for r in readers)
        assert sorted(r.outstanding for r in engine.pool) == [2, 2]  # fewest outstanding first
        a.kill()
        for reader in readers:
            reader.join(60)
            assert not reader.is_alive()
        errors = [r.error() for r in readers]
        failed = [e for e in errors if e is not None]
        assert len(failed) == 2, errors
        for message in failed:
            assert "upstream replica #1" in message and "incomplete" in message
            assert a.url not in message  # internal addresses stay in the server's log
        for reader in readers:
            if reader.error() is None:
                assert reader.payloads[-1] == "[DONE]"
                assert '"finish_reason":"length"' in "".join(reader.payloads)
        # New requests: all served by the other replica, none fails (the dead one is ejected,
        # or found dead on connect and skipped before anything is sent to the client).
        for _ in range(6):
            response = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                                  json={"messages": HI, "max_tokens": 3})  # fmt: skip
            assert response.status_code == 200, response.text
        dead = next(r for r in engine.pool if r.url.startswith(a.url))
        assert not dead.up
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert f'r1serve_upstream_up{{model="fake-model",replica="{a.url}/v1"}} 0.0' in metrics
        # Back on the same port: a health check re-admits it.
        a.launch().wait()
        assert wait_for(lambda: dead.up, timeout=30)
        readers = [StreamReader(server.url, 300) for _ in range(2)]
        for reader in readers:
            reader.start()
        assert all(r.started.wait(60) for r in readers)
        assert sorted(r.outstanding for r in engine.pool) == [1, 1]
        for reader in readers:
            reader.join(60)
            assert reader.error() is None and reader.payloads[-1] == "[DONE]"
    finally:
        server.__exit__()


def test_a_client_that_goes_away_cancels_the_upstream_request(
    pair: tuple[R1ServeProcess, R1ServeProcess],
) -> None:
    a, _ = pair
    if a.proc is None or a.proc.poll() is not None:
        a.launch().wait()
    server = gateway(f"{a.url}/v1")
    try:
        before = a.metric("r1serve_requests_finished_total", finish_reason="abort")
        body = {"messages": HI, "stream": True, "max_tokens": 2000}
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                          timeout=60) as response:  # fmt: skip
            for line in response.iter_lines():
                if '"content":"word' in line:
                    break
        aborted = lambda: a.metric("r1serve_requests_finished_total", finish_reason="abort")  # noqa: E731
        assert wait_for(lambda: aborted() == before + 1, timeout=20)
        assert a.metric("r1serve_requests_running") == 0
    finally:
        server.__exit__()


def test_serve_engine_upstream_keeps_the_key_out_of_its_output(
    pair: tuple[R1ServeProcess, R1ServeProcess],
) -> None:
    _, b = pair
    secret = "sk-never-shown-4711"
    proc = R1ServeProcess(
        ["-m", "r1serve", "serve", "--engine", "upstream", "--upstream-url", f"{b.url}/v1",
         "--no-auth", "--verbose", "--upstream-api-key-env", "MY_VLLM_KEY"],
        env={"MY_VLLM_KEY": secret},
    )  # fmt: skip
    try:
        proc.start()
        models = httpx.get(f"{proc.url}/v1/models", timeout=10).json()
        assert [(m["id"], m["engine"]) for m in models["data"]] == [("fake-model", "upstream")]
        response = httpx.post(f"{proc.url}/v1/chat/completions", timeout=60,
                              json={"messages": HI, "max_tokens": 6, "stream": True})  # fmt: skip
        payloads = sse_payloads(response.text)
        assert payloads[-1] == "[DONE]"
        deltas = [c["delta"] for p in payloads[:-1] for c in json.loads(p)["choices"]]
        assert "".join(d.get("reasoning", "") for d in deltas) == "Still thinking."
    finally:
        proc.stop()
    output = proc.log.read_text()
    assert "MY_VLLM_KEY" in output and secret not in output
    assert "Traceback" not in output


def test_tiny_r1_through_the_gateway_with_the_openai_client() -> None:
    upstream = tiny_r1_upstream().start()
    server = gateway(f"{upstream.url}/v1", tokenizer="tests/fixtures/tiny-r1/hf")
    try:
        direct = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="unused")
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        want = direct.chat.completions.create(model="tiny-r1", messages=HI, temperature=0)  # type: ignore[arg-type]
        got = client.chat.completions.create(model="tiny-r1", messages=HI, temperature=0)  # type: ignore[arg-type]
        assert got.choices[0].message.content == TINY_ANSWER
        assert (got.choices[0].message.model_extra or {})["reasoning_content"] == TINY_REASONING
        assert got.usage is not None and want.usage is not None
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
            want.usage.prompt_tokens, want.usage.completion_tokens,
        )  # fmt: skip
        stream = client.chat.completions.create(model="tiny-r1", messages=HI, temperature=0,  # type: ignore[arg-type]
                                                stream=True)  # fmt: skip
        reasoning, content = [], []
        for chunk in stream:
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                assert extra.get("reasoning") == extra.get("reasoning_content")
                reasoning.append(extra.get("reasoning") or "")
                content.append(choice.delta.content or "")
        assert ("".join(reasoning), "".join(content)) == (TINY_REASONING, TINY_ANSWER)
    finally:
        server.__exit__()
        upstream.stop()
