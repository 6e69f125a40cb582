"""``with_queued``: a reader that fell behind gets what is queued as one delta (issue #9)."""

from __future__ import annotations

import asyncio

from r1serve.engine.protocol import Delta, TokenLogprob, Usage, with_queued


def _queue(*deltas: Delta) -> asyncio.Queue[Delta]:
    queue: asyncio.Queue[Delta] = asyncio.Queue()
    for delta in deltas:
        queue.put_nowait(delta)
    return queue


def _lp(token: int) -> TokenLogprob:
    return TokenLogprob(token, -0.5)


def test_a_reader_that_keeps_up_gets_each_delta_as_it_is() -> None:
    first = Delta("a", (1,))
    assert with_queued(first, _queue()) is first


def test_queued_deltas_join_text_tokens_and_logprobs_in_order() -> None:
    usage = Usage(3, 4, 0)
    queue = _queue(
        Delta("é", (2,), logprobs=(_lp(2),)),
        Delta("", (3,), logprobs=(_lp(3),)),  # held text: a token without text yet
        Delta("c", (4,), finish_reason="length", usage=usage, logprobs=(_lp(4),)),
    )
    joined = with_queued(Delta("a", (1,), logprobs=(_lp(1),)), queue)
    assert joined == Delta(
        "aéc", (1, 2, 3, 4), finish_reason="length", usage=usage,
        logprobs=tuple(_lp(t) for t in (1, 2, 3, 4)),
    )  # fmt: skip
    assert queue.empty()


def test_nothing_is_joined_past_the_end() -> None:
    end = Delta("b", (2,), finish_reason="stop", stop_reason="</s>", usage=Usage(1, 2, 0))
    queue = _queue(end, Delta("never", (9,)))
    joined = with_queued(Delta("a", (1,)), queue)
    assert (joined.text, joined.token_ids, joined.finish_reason, joined.stop_reason) == (
        "ab",
        (1, 2),
        "stop",
        "</s>",
    )
    assert queue.qsize() == 1
    finished = Delta("", (), finish_reason="abort")
    assert with_queued(finished, _queue(Delta("x"))) is finished
