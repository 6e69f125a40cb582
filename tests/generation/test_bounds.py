"""Sampling bounds are defined once: every API refuses the same out-of-range value, naming it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from r1serve.api.ollama_schemas import Options
from r1serve.api.schemas import ChatCompletionRequest, GenerateRequest
from r1serve.conversations import ReplySettings
from r1serve.generation import bounds
from support.api import HI

# (OpenAI field, Ollama option, a value out of range, its bound)
OUT_OF_RANGE: list[tuple[str, str, Any, bounds.Bound]] = [
    ("temperature", "temperature", 100.5, bounds.TEMPERATURE),
    ("temperature", "temperature", -0.1, bounds.TEMPERATURE),
    ("top_p", "top_p", 1.01, bounds.TOP_P),
    ("top_k", "top_k", 1_000_001, bounds.TOP_K),
    ("min_p", "min_p", 1.5, bounds.MIN_P),
    ("repetition_penalty", "repeat_penalty", 10.5, bounds.REPETITION_PENALTY),
    ("presence_penalty", "presence_penalty", 2.5, bounds.PENALTY),
    ("frequency_penalty", "frequency_penalty", -2.5, bounds.PENALTY),
    ("seed", "seed", 2**64, bounds.SEED),
    ("max_tokens", "num_predict", 2**31, bounds.MAX_TOKENS),
]


@pytest.mark.parametrize(("field", "option", "value", "bound"), OUT_OF_RANGE)
def test_openai_and_ollama_refuse_the_same_value_naming_the_same_parameter(
    client: TestClient, field: str, option: str, value: Any, bound: bounds.Bound
) -> None:
    assert not bound.contains(value)
    openai = client.post("/v1/chat/completions", json={"messages": HI, field: value})
    assert openai.status_code == 400, openai.text
    error = openai.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ")

    body = {"model": "fake-model", "messages": HI, "stream": False, "options": {option: value}}
    ollama = client.post("/api/chat", json=body)
    assert ollama.status_code == 400, ollama.text
    assert ollama.json()["error"].startswith(f"options.{option}: ")
    # The same words: one definition behind both.
    assert (
        openai.json()["error"]["message"].split(": ", 1)[1]
        == ollama.json()["error"].split(": ", 1)[1]
    )


CONVERSATION_SETTINGS = [
    (field, value) for field, _, value, _ in OUT_OF_RANGE if field in ReplySettings.model_fields
]


@pytest.mark.parametrize(("field", "value"), CONVERSATION_SETTINGS)
def test_conversation_settings_refuse_what_the_apis_refuse(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        ReplySettings.model_validate({field: value})
    assert refused.value.errors()[0]["loc"] == (field,)
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": HI, field: value})


def test_the_edges_of_every_range_are_accepted_everywhere() -> None:
    edges = {
        "temperature": bounds.TEMPERATURE.le,
        "top_p": bounds.TOP_P.le,
        "top_k": int(bounds.TOP_K.le or 0),
        "min_p": bounds.MIN_P.le,
        "repetition_penalty": bounds.REPETITION_PENALTY.le,
        "seed": bounds.SEED.ge,
        "max_tokens": bounds.MAX_TOKENS.le,
    }
    ChatCompletionRequest.model_validate({"messages": HI, **edges})
    ReplySettings.model_validate(edges)
    Options.model_validate(
        {**{k: v for k, v in edges.items() if k not in ("repetition_penalty", "max_tokens")},
         "repeat_penalty": edges["repetition_penalty"], "num_predict": edges["max_tokens"]}
    )  # fmt: skip
    GenerateRequest.model_validate(
        {"prompt": "x", "temperature": edges["temperature"], "max_length": edges["max_tokens"]}
    )


def test_the_simple_endpoints_use_the_same_ranges(client: TestClient) -> None:
    stream = client.get("/stream-generate", params={"prompt": "x", "temperature": 100.5})
    assert stream.status_code == 400 and stream.json()["error"]["param"] == "temperature"
    post = client.post("/generate", json={"prompt": "x", "top_p": 1.01})
    assert post.status_code == 400 and post.json()["error"]["param"] == "top_p"
    long = client.get("/stream-generate", params={"prompt": "x", "max_length": 2**31})
    assert long.status_code == 400 and long.json()["error"]["param"] == "max_length"


def test_ollama_off_values_outside_the_range_still_mean_off(client: TestClient) -> None:
    body = {"model": "fake-model", "messages": HI, "stream": False}
    off = {"top_p": 0.0, "repeat_penalty": 0.0, "num_predict": -1}
    assert client.post("/api/chat", json={**body, "options": off}).status_code == 200
    refused = client.post("/v1/chat/completions", json={"messages": HI, "top_p": 0.0})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_p"


def test_stop_strings_are_checked_alike(client: TestClient) -> None:
    many = [f"s{i}" for i in range(bounds.MAX_STOP_STRINGS + 1)]
    openai = client.post("/v1/chat/completions", json={"messages": HI, "stop": many})
    body = {"model": "fake-model", "messages": HI, "stream": False, "options": {"stop": many}}
    ollama = client.post("/api/chat", json=body)
    assert openai.status_code == ollama.status_code == 400
    words = f"at most {bounds.MAX_STOP_STRINGS} stop strings"
    assert words in openai.json()["error"]["message"] and words in ollama.json()["error"]


def test_the_docs_give_the_ranges_the_code_has() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "generation.md").read_text()
    table = text[text.index("## Sampling ranges") :]
    rows = {
        "`temperature`": f"0 to {bounds.TEMPERATURE.le:g}",
        "`top_k`": f"{int(bounds.TOP_K.le or 0):,}",
        "`min_p`": f"0 to {bounds.MIN_P.le:g}",
        "`presence_penalty`": f"{bounds.PENALTY.ge:g} to {bounds.PENALTY.le:g}",
        "`stop`": f"at most {bounds.MAX_STOP_STRINGS} strings of 1 to {bounds.MAX_STOP_LENGTH}",
        "`n`": f"1 to {bounds.MAX_N}",
    }
    for name, words in rows.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name}"))
        assert words in row, (name, row)
    assert bounds.REPETITION_PENALTY.le == 10 and "at most 10" in table
    assert bounds.MAX_TOKENS.le == 2**31 - 1 and "1 to 2^31 - 1" in table


@pytest.mark.parametrize(
    ("name", "bound", "outside"),
    [
        ("temperature", bounds.TEMPERATURE, bounds.TEMPERATURE.le + 0.5),  # type: ignore[operator]
        ("top_p", bounds.TOP_P, 0.0),
        ("top_k", bounds.TOP_K, bounds.TOP_K.le + 1),  # type: ignore[operator]
        ("min_p", bounds.MIN_P, 1.5),
        ("repetition_penalty", bounds.REPETITION_PENALTY, 0.0),
        ("presence_penalty", bounds.PENALTY, 2.5),
        ("frequency_penalty", bounds.PENALTY, -2.5),
    ],
)
def test_the_engine_checks_the_same_ranges(name: str, bound: bounds.Bound, outside: float) -> None:
    """The engine's own check (``SamplingParams``) takes its ranges from the same place."""
    from r1serve.engine.protocol import SamplingParams
    from r1serve.errors import RequestError

    edge = bound.le if bound.le is not None else bound.ge
    kind = type(getattr(SamplingParams(), name))
    SamplingParams(**{name: kind(edge)})
    with pytest.raises(RequestError, match=re.escape(bound.describe())) as raised:
        SamplingParams(**{name: kind(outside)})
    assert raised.value.param == name
