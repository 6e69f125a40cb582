"""Tokens llama.cpp's stream holds back inside a UTF-8 character come back, with their ids.

tiny-r1's vocabulary (DeepSeek-R1-Distill's) has no token for "▁" (U+2581, in every DeepSeek
tool-call marker): it is token 10417 (bytes E2 96) then token 223 (byte 81), and llama.cpp sends
no chunk for 10417. ``FakeLlamaServer`` streams a script of token ids the way llama.cpp's server
does (no chunk while the text ends mid-character; the next chunk's text carries those bytes, its
``timings`` the count of sampled tokens), so the engine's recovery runs without a model;
tests/engine/test_contract.py has the same on the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from r1serve.engine.llamacpp.engine import LlamaCppEngine
from r1serve.engine.llamacpp.held import TokenPieces
from r1serve.engine.llamacpp.wire import parse_chunk
from r1serve.engine.protocol import GenerationRequest, Prompt, SamplingParams
from r1serve.engine.text.gguf_tokenizer import read_gguf_metadata
from r1serve.engine.text.tokenizer import HFTokenizer
from support.models import TINY_PROMPT_IDS, TINY_R1_GGUF

TOOL, E2_96, X81 = 14172, 10417, 223  # "tool", the first two bytes of "▁", its last byte
EOS = 151643


@pytest.fixture(scope="module")
def pieces() -> TokenPieces:
    found = TokenPieces.from_gguf(read_gguf_metadata(TINY_R1_GGUF))
    assert found is not None
    return found


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    return HFTokenizer.from_gguf(TINY_R1_GGUF)


def test_pieces_are_the_bytes_llama_cpp_gives_each_token(pieces: TokenPieces) -> None:
    assert pieces.piece(TOOL) == b"tool"
    assert pieces.piece(E2_96) == "▁".encode()[:2]
    assert pieces.piece(X81) == b"\x81"
    assert pieces.piece(EOS) is None  # a control token: llama.cpp's text has nothing for it
    assert pieces.piece(151648) == b"<think>"  # user-defined: its text, as llama.cpp writes it
    assert pieces.piece(10**7) is None


def test_held_back_ids_are_spelled_from_the_chunk_bytes(pieces: TokenPieces) -> None:
    marker = "▁".encode()
    assert pieces.held_back(marker, [X81], 1) == [E2_96]
    assert pieces.held_back(b"tool" + marker, [X81], 2) == [TOOL, E2_96]
    # The count decides the split: three byte tokens are three ids.
    three = pieces.spell(marker + b"\x81", 3)
    assert three is not None and len(three) == 3
    assert b"".join(pieces.piece(t) or b"" for t in three) == marker + b"\x81"
    assert pieces.spell(marker[:2], 3) is None  # two bytes cannot be three tokens
    assert pieces.held_back(b"abc", [X81], 1) is None  # the chunk does not end in its token
    assert pieces.spell(b"", 1) is None


def test_sentencepiece_vocabularies_spell_bytes_and_spaces() -> None:
    tokens = ["<unk>", "<s>", "<0xE2>", "<0x96>", "<0x81>", "\u2581a", "b"]
    types = [2, 3, 6, 6, 6, 1, 1]
    sp = TokenPieces("llama", tokens, types)
    assert sp.piece(5) == b" a" and sp.piece(1) is None
    assert sp.held_back(b" a\xe2\x96\x81", [4], 3) == [5, 2, 3]
    unknown = {"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]}
    assert TokenPieces.from_gguf(unknown) is None
    assert TokenPieces.from_gguf({"tokenizer.ggml.model": "bert"}) is None


class FakeLlamaServer:
    """Streams scripted token ids as xllamacpp does (OpenAI's completion chunks, with
    ``timings_per_token``), holding back tokens that end mid-character as llama.cpp does."""

    def __init__(self, script: Sequence[int], pieces: TokenPieces) -> None:
        self.script = list(script)
        self.pieces = pieces

    def handle_completions(self, prompt: dict[str, Any], callback: Any = None) -> Any:
        assert prompt["timings_per_token"] and prompt["n_probs"] >= 1
        send: Callable[[Any], bool] = callback
        generated, sent, n = b"", 0, 0
        for n, token in enumerate(self.script[: prompt["n_predict"]], start=1):
            own = self.pieces.piece(token) or b""
            generated += own
            if _ends_mid_character(generated):
                continue  # llama.cpp's process_token: no chunk yet
            text = generated[sent:]
            sent = len(generated)
            mine = {"id": token, "token": own.decode(errors="replace"), "bytes": list(own)}
            # The entry's text and bytes are the whole chunk's, its alternatives' their own.
            entry = {"id": token, "token": text.decode(), "bytes": list(text), "top_probs": [mine]}
            chunk = {
                "choices": [
                    {"text": text.decode(), "logprobs": {"content": [entry]}, "finish_reason": None}
                ],
                "timings": {"predicted_n": n},
            }
            if send(chunk):
                return None
        send({"choices": [{"text": "", "finish_reason": "stop"}], "timings": {"predicted_n": n}})
        return None


def _ends_mid_character(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"
    return False


class NoChat:
    source = ""

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Prompt:
        raise AssertionError("these tests send token ids")


def fake_engine(
    script: Sequence[int], tokenizer: HFTokenizer, pieces: TokenPieces, *, recover: bool = True
) -> LlamaCppEngine:
    return LlamaCppEngine(
        server=FakeLlamaServer(script, pieces),
        tokenizer=tokenizer,
        chat=NoChat(),
        model_name="tiny",
        slots=1,
        slot_tokens=256,
        model_context_length=256,
        eos_token_ids=frozenset({EOS}),
        max_waiting=1,
        pieces=pieces if recover else None,
    )


async def run(engine: LlamaCppEngine) -> tuple[str, list[int], Any]:
    await engine.start()
    try:
        request = GenerationRequest("r", TINY_PROMPT_IDS, SamplingParams(max_tokens=40))
        deltas = [delta async for delta in await engine.submit(request)]
    finally:
        await engine.close()
    text = "".join(d.text for d in deltas)
    return text, [t for d in deltas for t in d.token_ids], deltas[-1]


def test_the_engine_restores_held_back_tokens(tokenizer: HFTokenizer, pieces: TokenPieces) -> None:
    # "tool▁call": 10417 gets no chunk of its own.
    script = [TOOL, E2_96, X81, 6659, EOS]
    text, ids, last = asyncio.run(run(fake_engine(script, tokenizer, pieces)))
    assert text == "tool▁call"
    assert ids == script
    assert last.finish_reason == "stop" and last.usage.completion_tokens == len(script)


def test_without_pieces_the_gap_is_what_it_was(tokenizer: HFTokenizer, pieces: TokenPieces) -> None:
    # The check that the fake holds back as llama.cpp does: nothing recovers 10417 here.
    script = [TOOL, E2_96, X81, 6659, EOS]
    text, ids, _ = asyncio.run(run(fake_engine(script, tokenizer, pieces, recover=False)))
    assert ids == [TOOL, X81, 6659, EOS]
    assert "\ufffd" in text


def test_parse_chunk_reads_the_count_and_the_bytes() -> None:
    # As llama.cpp streamed "ab▁cd" on tiny-r1 (its second chunk; 10417 had none).
    alone = {"id": X81, "token": "\ufffd", "bytes": [0x81], "prob": 1.0}
    entry = {"id": X81, "token": "▁", "bytes": [0xE2, 0x96, 0x81], "top_probs": [alone]}
    choice = {"text": "▁", "index": 0, "logprobs": {"content": [entry]}, "finish_reason": None}
    chunk = parse_chunk({"choices": [choice], "timings": {"predicted_n": 3}})
    assert (chunk.token_ids, chunk.predicted, chunk.data) == ((X81,), 3, "▁".encode())
    native = parse_chunk({"content": "é", "tokens_predicted": 2, "stop": False})
    assert (native.predicted, native.data) == (2, "é".encode())
