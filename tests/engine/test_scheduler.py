"""The scheduler through the fake runner: FIFO admission, chunked prefill, limits, deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.engine.protocol import Delta, GenerationRequest, SamplingParams
from r1serve.engine.transformers.scheduler import IDLE_PREFILL_FACTOR, SchedulerConfig
from r1serve.errors import ContextLengthError, OverloadedError


def request(rid: str, prompt: Sequence[int] = (1, 2, 3), **params: object) -> GenerationRequest:
    return GenerationRequest(rid, tuple(prompt), SamplingParams(**params))  # type: ignore[arg-type]


async def collect(engine: FakeEngine, req: GenerationRequest) -> list[Delta]:
    return [d async for d in await engine.submit(req)]


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_admission_is_fifo_when_slots_are_scarce() -> None:
    order: list[str] = []
    engine = FakeEngine(FakeReply(chunks=["a", "b"], delay_s=0.005), max_slots=1)
    engine.add_finish_listener(lambda done: order.append(done.request_id))

    async def main() -> None:
        await engine.start()
        try:
            await asyncio.gather(*(collect(engine, request(f"r{i}")) for i in range(6)))
        finally:
            await engine.close()

    run(main())
    assert order == [f"r{i}" for i in range(6)]
    assert engine.fake_runner.max_active == 1


def test_requests_join_a_running_batch() -> None:
    engine = FakeEngine(FakeReply(chunks=[f"{i} " for i in range(30)], delay_s=0.005))

    async def main() -> list[list[Delta]]:
        await engine.start()
        try:
            first = asyncio.ensure_future(collect(engine, request("a")))
            await asyncio.sleep(0.05)  # "a" is decoding when the others arrive
            rest = [asyncio.ensure_future(collect(engine, request(f"b{i}"))) for i in range(3)]
            return [await first, *await asyncio.gather(*rest)]
        finally:
            await engine.close()

    results = run(main())
    assert all(text(r) == "".join(f"{i} " for i in range(30)) for r in results)  # type: ignore[union-attr]
    assert max(engine.fake_runner.decode_batches) == 4  # all four decoded together


def test_long_prompt_is_prefilled_in_chunks_between_decode_steps() -> None:
    engine = FakeEngine(
        FakeReply(chunks=[f"{i} " for i in range(400)], delay_s=0.002),
        scheduler_config=SchedulerConfig(max_prefill_tokens=64),
    )
    runner = engine.fake_runner

    async def main() -> None:
        await engine.start()
        try:
            running = asyncio.ensure_future(collect(engine, request("short")))
            await asyncio.sleep(0.02)
            steps_before = len(runner.decode_batches)
            await collect(engine, request("long", prompt=[7] * 1000, max_tokens=2))
            await running
            # The 1000-token prompt went in chunks of at most 64, with decode steps between.
            assert max(runner.prefill_tokens) <= 64
            assert len(runner.decode_batches) - steps_before >= 1000 // 64
        finally:
            await engine.close()

    run(main())


def test_while_nothing_decodes_a_wave_of_prompts_is_prefilled_in_larger_steps() -> None:
    engine = FakeEngine(
        FakeReply(chunks=["a", "b"]), scheduler_config=SchedulerConfig(max_prefill_tokens=64)
    )
    runner = engine.fake_runner

    async def main() -> None:
        await engine.start()
        try:
            await collect(engine, request("alone", prompt=[7] * 1000, max_tokens=2))
            # No stream could stall, so the budget was 8 x 64: two chunks, not sixteen.
            assert runner.prefill_tokens == [512, 488]
        finally:
            await engine.close()

    run(main())
    assert IDLE_PREFILL_FACTOR == 8


def test_full_queue_raises_overloaded_with_retry_after() -> None:
    engine = FakeEngine(
        FakeReply(chunks=["x"] * 50, delay_s=0.01),
        max_slots=1,
        scheduler_config=SchedulerConfig(max_waiting=2),
    )

    async def main() -> None:
        await engine.start()
        try:
            streams = [await engine.submit(request("r0"))]
            while engine.stats().running == 0:
                await asyncio.sleep(0.005)
            streams += [await engine.submit(request(f"r{i}")) for i in (1, 2)]
            with pytest.raises(OverloadedError) as caught:
                await engine.submit(request("overflow"))
            assert caught.value.status_code == 503 and caught.value.retry_after >= 1
            assert engine.stats().rejected == 1
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]
        finally:
            await engine.close()

    run(main())


def test_request_that_can_never_fit_is_refused_with_numbers() -> None:
    engine = FakeEngine(max_seq_len=100, context_length=4096)
    assert engine.context_length == 100
    with pytest.raises(ContextLengthError) as caught:
        engine.resolve_max_tokens(90, 20)
    assert "90" in caught.value.message and "100" in caught.value.message


def test_deadline_ends_a_runaway_generation() -> None:
    engine = FakeEngine(FakeReply(chunks=["z"], eos=False, repeat=True, delay_s=0.005))

    async def main() -> list[Delta]:
        await engine.start()
        try:
            req = GenerationRequest("slow", (1, 2), SamplingParams(), timeout_s=0.2)
            return await asyncio.wait_for(collect(engine, req), timeout=5)
        finally:
            await engine.close()

    deltas = run(main())
    assert deltas[-1].finish_reason == "timeout"  # type: ignore[index]
    assert deltas[-1].usage is not None  # type: ignore[index]


def test_abort_while_queued_and_running_frees_everything() -> None:
    engine = FakeEngine(FakeReply(chunks=["y"] * 200, delay_s=0.002), max_slots=2)

    async def main() -> None:
        await engine.start()
        try:
            for cycle in range(50):
                streams = [await engine.submit(request(f"c{cycle}-{i}")) for i in range(4)]
                first = streams[0]
                await first.__anext__()  # one is mid-stream, others queued or just started
                for stream in streams:
                    await stream.aclose()  # type: ignore[attr-defined]
            for _ in range(200):
                if engine.stats().running == 0 and engine.stats().waiting == 0:
                    break
                await asyncio.sleep(0.01)
            stats = engine.stats()
            assert (stats.running, stats.waiting, stats.kv_tokens_used) == (0, 0, 0)
            assert engine.fake_runner.active == 0
        finally:
            await engine.close()

    run(main())
    assert set(engine.finished.values()) <= {"abort", "stop"}
    assert len(engine.finished) == 200
