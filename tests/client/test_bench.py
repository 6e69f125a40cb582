"""The benchmark client against the real app over the scripted fake engine, and odd servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from r1serve.client.bench import Bench, BenchConfig, BenchRun, load_prompts
from r1serve.engine.fake import FakeReply
from r1serve.engine.transformers.scheduler import SchedulerConfig
from r1serve.errors import R1ServeError
from support.api import LiveServer

Start = Callable[..., LiveServer]
STEP_S = 0.02  # the fake sleeps this long per decode step
REASONING_WORDS = 10
THOUGHT = " ".join(f"step{i}" for i in range(REASONING_WORDS))
REASONED = FakeReply(f"<think>\n{THOUGHT}\n</think>\n\nThe answer is 42 today.", delay_s=STEP_S)


def run_bench(config: BenchConfig, transport: httpx.AsyncBaseTransport | None = None) -> BenchRun:
    return asyncio.run(Bench(config, load_prompts("chat"), transport=transport).run())


def test_metrics_follow_the_known_delays(live_server: Start) -> None:
    server = live_server(REASONED)
    run = run_bench(BenchConfig(server.url, concurrency=(1,), requests=3, warmup=0))
    assert run.model == "fake-model" and run.served_models == ["fake-model"]
    (level,) = run.levels
    assert (level.completed, level.errors) == (3, 0)
    assert level.token_count_source == "usage"
    assert level.mean_output_tokens >= REASONING_WORDS + 5
    assert level.ttft and level.ttfo and level.tpot and level.itl and level.latency
    # Every decode step sleeps STEP_S, so gaps and time per token are at least that.
    assert level.itl.p50 >= 0.9 * STEP_S and level.itl.p50 < 10 * STEP_S
    assert level.tpot.mean >= 0.8 * STEP_S
    # The answer starts only after the reasoning words have streamed.
    assert level.ttfo.p50 - level.ttft.p50 >= 0.9 * (REASONING_WORDS - 1) * STEP_S
    assert level.latency.p50 >= level.ttfo.p50
    assert level.output_tokens_per_s == pytest.approx(level.output_tokens / level.wall_s)
    assert level.client_cpu_s > 0


def test_sweep_keeps_each_level_in_flight(live_server: Start) -> None:
    server = live_server(FakeReply(chunks=["w "] * 20, delay_s=0.01))
    run = run_bench(BenchConfig(server.url, concurrency=(1, 3), requests=6, warmup=1))
    assert [level.concurrency for level in run.levels] == [1, 3]
    assert [level.completed for level in run.levels] == [6, 6]
    assert server.engine.fake_runner.max_active == 3
    assert max(server.engine.fake_runner.decode_batches) == 3


def test_completions_endpoint_and_duration(live_server: Start) -> None:
    server = live_server(FakeReply(chunks=["a", "b", "c"], delay_s=0.01))
    config = BenchConfig(
        server.url, endpoint="completions", concurrency=(2,), requests=None, duration_s=0.3
    )
    (level,) = run_bench(config).levels
    assert level.completed >= 2 and level.errors == 0
    assert level.ttfo and level.ttft and level.ttfo.p50 == pytest.approx(level.ttft.p50)


def test_full_queue_503s_are_counted_as_errors(live_server: Start) -> None:
    server = live_server(
        FakeReply(chunks=["x "] * 30, delay_s=0.01),
        max_slots=1,
        scheduler_config=SchedulerConfig(max_waiting=1),
    )
    (level,) = run_bench(BenchConfig(server.url, concurrency=(4,), requests=8, warmup=0)).levels
    assert level.errors >= 1 and level.completed >= 1
    assert level.completed + level.errors == 8
    assert level.error_messages and level.error_messages[0].startswith("HTTP 503:")


def test_ignore_eos_is_sent_and_honoured_by_r1serve(live_server: Start) -> None:
    server = live_server(FakeReply(chunks=["a "] * 3))
    run = run_bench(
        BenchConfig(server.url, concurrency=(1,), requests=2, max_tokens=12, ignore_eos=True)
    )
    (level,) = run.levels
    assert level.ended_before_max_tokens == 0 and level.finish_reasons == {"length": 2}
    assert run.notes == []


def _sse(*payloads: object) -> bytes:
    return b"".join(
        f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n".encode() for p in payloads
    )


def _delta(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def _odd_server(stream: bytes) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "odd"}]})
        body = json.loads(request.content)
        assert body["stream"] and body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True and body["top_k"] == 5  # flag and --extra-body
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def test_server_without_usage_or_eos_support_gets_notes() -> None:
    stream = _sse(_delta("Hi"), _delta(" there", "stop"), "[DONE]")
    config = BenchConfig(
        "http://odd", concurrency=(1,), requests=2, ignore_eos=True, extra_body={"top_k": 5}
    )
    run = run_bench(config, _odd_server(stream))
    (level,) = run.levels
    assert level.token_count_source == "chunks" and level.mean_output_tokens == 2
    assert any("ignore_eos was sent, but 2 of 2" in note for note in run.notes)
    assert any("counted as text chunks" in note for note in run.notes)


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (_sse(_delta("Hi"), {"error": {"message": "the model failed"}}), "model failed"),
        (_sse(_delta("Hi"), {"error": "cb worker died"}), "cb worker died"),
        (_sse("[DONE]"), "without any output"),
        (b"data: {not json\n\n", "malformed stream"),
    ],
)
def test_broken_streams_are_errors(stream: bytes, error: str) -> None:
    config = BenchConfig(
        "http://odd", concurrency=(1,), requests=1, warmup=0, ignore_eos=True,
        extra_body={"top_k": 5},
    )  # fmt: skip
    (level,) = run_bench(config, _odd_server(stream)).levels
    assert level.errors == 1 and error in level.error_messages[0]


def test_unreachable_server_is_one_error() -> None:
    with pytest.raises(R1ServeError, match=r"cannot reach http://127\.0\.0\.1:9"):
        run_bench(BenchConfig("http://127.0.0.1:9", requests=1))
