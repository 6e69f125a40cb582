"""llama.cpp's own server (through xllamacpp, in its own process, on tiny-r1.gguf) as the
upstream of r1serve, through the official openai client: tiny-r1's exact split whether
llama.cpp parses the reasoning (``reasoning_content``) or passes raw ``<think>`` tags, usage as
llama.cpp counts it (and in quotas), finish reasons, max_tokens, stop strings, prompts counted
by llama.cpp's ``/tokenize``, sampling fields as its slots read them, text completions, its
errors in OpenAI's shape, and a client that goes away or a Stop ending llama.cpp's request
(its ``/slots`` go idle, its decode count stops far short of the request's budget)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from r1serve.engine.upstream import UpstreamConfig, UpstreamEngine, build_upstream
from r1serve.errors import ConfigError
from support.api import LiveServer, make_settings, sse_payloads, wait_for
from support.models import TINY_ANSWER, TINY_RAW, TINY_REASONING, TINY_REPLY_IDS
from support.upstreams import LlamaCppUpstream

pytestmark = pytest.mark.slow  # starts llama.cpp servers

HI = [{"role": "user", "content": "hi"}]
KEY_ENV = "R1SERVE_TEST_LLAMACPP_KEY"
KEY = "sk-llamacpp-test"
FORMATS = ["auto", "none"]  # llama.cpp's --reasoning-format: parsed, or raw <think> tags
CTX = 4096  # per slot: tiny-r1's trained context
BUDGET = 4000  # tokens a request that ignores EOS would write (seconds at llama.cpp's speed)
DECODED = "llamacpp:n_decode_total"  # llama.cpp's decode steps: one per token of one request


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, LlamaCppUpstream]]:
    servers = {
        f: LlamaCppUpstream(reasoning_format=f, api_key=KEY, ctx_per_slot=CTX) for f in FORMATS
    }
    try:
        for server in servers.values():
            server.launch()
        yield {f: server.wait() for f, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def gateways(upstreams: dict[str, LlamaCppUpstream]) -> Iterator[dict[str, LiveServer]]:
    os.environ[KEY_ENV] = KEY
    servers: dict[str, LiveServer] = {}
    try:
        for name, upstream in upstreams.items():
            servers[name] = gateway(upstream)
        yield servers
    finally:
        for server in servers.values():
            server.__exit__()
        os.environ.pop(KEY_ENV, None)


def gateway(upstream: LlamaCppUpstream, **config: Any) -> LiveServer:
    engine = build_upstream(
        UpstreamConfig(urls=(f"{upstream.url}/v1",), **{"api_key_env": KEY_ENV, **config})
    )
    return LiveServer(engine, make_settings(allowed_hosts=["127.0.0.1"])).__enter__()  # type: ignore[arg-type]


def client_of(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def extra(message: Any) -> dict[str, Any]:
    return message.model_extra or {}


def streamed(client: openai.OpenAI, **fields: Any) -> tuple[str, str, str, list[str], Any]:
    """reasoning_content, reasoning, content, finish reasons and usage of one streamed chat."""
    stream = client.chat.completions.create(
        model="tiny-r1", messages=HI, stream=True, stream_options={"include_usage": True}, **fields
    )
    reasoning, alias, content, finishes, usage = [], [], [], [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            reasoning.append(extra(choice.delta).get("reasoning_content") or "")
            alias.append(extra(choice.delta).get("reasoning") or "")
            content.append(choice.delta.content or "")
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
    return "".join(reasoning), "".join(alias), "".join(content), finishes, usage


def test_llamacpp_answers_in_the_shape_its_reasoning_format_says(
    upstreams: dict[str, LlamaCppUpstream],
) -> None:
    """What the test covers: llama.cpp parses the reasoning itself, or leaves raw tags."""
    parsed = client_of(upstreams["auto"].url, KEY).chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0
    )
    # llama.cpp keeps the newlines around the reasoning; r1serve's answers do not
    assert extra(parsed.choices[0].message)["reasoning_content"] == f"\n{TINY_REASONING}\n"
    assert parsed.choices[0].message.content == f"\n\n{TINY_ANSWER}"
    raw = client_of(upstreams["none"].url, KEY).chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0
    )
    assert raw.choices[0].message.content == f"<think>\n{TINY_REASONING}\n</think>\n\n{TINY_ANSWER}"
    assert not extra(raw.choices[0].message).get("reasoning_content")


def test_the_model_its_context_and_its_tokenizer_come_from_llamacpp(
    upstreams: dict[str, LlamaCppUpstream], gateways: dict[str, LiveServer]
) -> None:
    upstream = upstreams["auto"]
    engine: UpstreamEngine = gateways["auto"].engine  # type: ignore[assignment]
    assert (engine.upstream_model, engine.model_name) == ("tiny-r1", "tiny-r1")
    assert engine.context_length == upstream.ctx_per_slot  # /props: one slot's context
    assert "/tokenize (llama.cpp" in engine.counter_name
    direct = client_of(upstream.url, KEY).chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0
    )
    assert direct.usage is not None
    long = [{"role": "system", "content": "Be brief."}, *HI, {"role": "assistant",
            "content": TINY_ANSWER}, {"role": "user", "content": "And again, please."}]  # fmt: skip
    again = client_of(upstream.url, KEY).chat.completions.create(
        model="tiny-r1",
        messages=long,  # type: ignore[arg-type]
        max_tokens=1,
    )
    assert again.usage is not None
    assert len(engine.render_chat(HI).token_ids) == direct.usage.prompt_tokens == 4
    assert len(engine.render_chat(long).token_ids) == again.usage.prompt_tokens
    answer_ids = list(TINY_REPLY_IDS[17:26])  # "Hello! How can I help you today?"
    assert engine.tokenizer.encode(TINY_ANSWER) == answer_ids


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_split_usage_and_finish(
    fmt: str, upstreams: dict[str, LlamaCppUpstream], gateways: dict[str, LiveServer]
) -> None:
    direct = client_of(upstreams[fmt].url, KEY).chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0
    )
    reasoning, alias, content, finishes, usage = streamed(
        client_of(gateways[fmt].url), temperature=0
    )
    assert reasoning == alias == TINY_REASONING
    assert content == TINY_ANSWER
    assert finishes == ["stop"]
    assert usage is not None and direct.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )
    assert usage.completion_tokens in (26, 27)  # the reply, with or without its EOS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_reply_split_usage_and_finish(fmt: str, gateways: dict[str, LiveServer]) -> None:
    whole = client_of(gateways[fmt].url).chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0
    )
    message = whole.choices[0].message
    assert message.content == TINY_ANSWER
    assert extra(message)["reasoning_content"] == extra(message)["reasoning"] == TINY_REASONING
    assert whole.choices[0].finish_reason == "stop"
    assert whole.model == "tiny-r1"
    assert whole.usage is not None and whole.usage.prompt_tokens == 4
    assert whole.usage.completion_tokens in (26, 27)


@pytest.mark.parametrize("fmt", FORMATS)
def test_max_tokens_ends_with_length(fmt: str, gateways: dict[str, LiveServer]) -> None:
    client = client_of(gateways[fmt].url)
    reasoning, alias, content, finishes, usage = streamed(client, temperature=0, max_tokens=6)
    assert finishes == ["length"]
    assert usage is not None and usage.completion_tokens == 6
    # <think>, "\n", then "Okay", ",", " the", " user"
    assert reasoning == alias == "Okay, the user" and content == ""
    whole = client.chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0, max_tokens=6
    )
    assert whole.choices[0].finish_reason == "length"
    assert extra(whole.choices[0].message)["reasoning_content"] == "Okay, the user"
    assert whole.usage is not None and whole.usage.completion_tokens == 6


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stop_string_ends_the_answer(fmt: str, gateways: dict[str, LiveServer]) -> None:
    client = client_of(gateways[fmt].url)
    reasoning, _, content, finishes, usage = streamed(client, temperature=0, stop=["How can"])
    assert reasoning == TINY_REASONING
    assert content.rstrip() == "Hello!" and finishes == ["stop"]
    assert usage is not None and 18 <= usage.completion_tokens < 26
    whole = client.chat.completions.create(
        model="tiny-r1", messages=HI, temperature=0, stop=["should greet"]
    )
    message = whole.choices[0].message
    assert extra(message)["reasoning_content"].rstrip() == "Okay, the user says hello. I"
    assert whole.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_text_completion_goes_to_llamacpps_completions(
    stream: bool, gateways: dict[str, LiveServer]
) -> None:
    """A raw prompt goes to llama.cpp's /v1/completions as text; R1's raw reply comes back."""
    client = client_of(gateways["auto"].url)
    prompt = "<｜User｜>hi<｜Assistant｜>"  # tiny-r1's chat prompt, without the BOS llama.cpp adds
    if stream:
        pieces, finishes, usage = [], [], None
        for chunk in client.completions.create(
            model="tiny-r1", prompt=prompt, temperature=0, stream=True,
            stream_options={"include_usage": True},
        ):  # fmt: skip
            usage = chunk.usage or usage
            for choice in chunk.choices:
                pieces.append(choice.text)
                if choice.finish_reason is not None:
                    finishes.append(choice.finish_reason)
        text = "".join(pieces)
    else:
        whole = client.completions.create(model="tiny-r1", prompt=prompt, temperature=0)
        text, finishes, usage = whole.choices[0].text, [whole.choices[0].finish_reason], whole.usage
    assert text == TINY_RAW and finishes == ["stop"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 27)


def test_sampling_fields_reach_llamacpp(
    upstreams: dict[str, LlamaCppUpstream], gateways: dict[str, LiveServer]
) -> None:
    """What llama.cpp's slot says it was asked: repetition_penalty under its own name too."""
    client_of(gateways["auto"].url).chat.completions.create(
        model="tiny-r1",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=3,
        temperature=0.5,
        top_p=0.9,
        seed=11,
        extra_body={"top_k": 7, "min_p": 0.1, "repetition_penalty": 1.3},
    )
    slots = upstreams["auto"].slots()
    asked = [s["params"] for s in slots if s.get("params", {}).get("seed") == 11]
    assert len(asked) == 1
    got = {k: round(float(asked[0][k]), 3) for k in ("temperature", "top_p", "top_k", "min_p",
                                                    "repeat_penalty", "max_tokens")}  # fmt: skip
    assert got == {"temperature": 0.5, "top_p": 0.9, "top_k": 7, "min_p": 0.1,
                   "repeat_penalty": 1.3, "max_tokens": 3}  # fmt: skip


@pytest.mark.parametrize("tokenizer", ["upstream", "estimate"])
def test_usage_counts_toward_the_callers_quota(
    tokenizer: str, upstreams: dict[str, LlamaCppUpstream]
) -> None:
    """llama.cpp's usage is what the response says and the quota counts, also where r1serve
    only estimated the prompt (5 tokens for "hi"; llama.cpp's 4)."""
    from fastapi.testclient import TestClient

    from r1serve.api.app import create_app
    from r1serve.auth import close_accounts
    from support.accounts import BASE_URL, SecureApp, secure_settings, test_accounts

    os.environ[KEY_ENV] = KEY
    settings = secure_settings()
    accounts = test_accounts(settings)
    engine = build_upstream(
        UpstreamConfig(
            urls=(f"{upstreams['auto'].url}/v1",), api_key_env=KEY_ENV, tokenizer=tokenizer
        )
    )
    assert len(engine.render_chat(HI).token_ids) == (4 if tokenizer == "upstream" else 5)
    try:
        with TestClient(create_app(settings, engine, accounts), base_url=BASE_URL) as client:
            app = SecureApp(client, accounts, engine)  # type: ignore[arg-type]
            app.add_user("ada")
            headers = {"Authorization": f"Bearer {app.key_for('ada')}"}
            whole = client.post(
                "/v1/chat/completions", json={"messages": HI, "temperature": 0}, headers=headers
            ).json()
            assert whole["usage"]["prompt_tokens"] == 4
            body = {"messages": HI, "stream": True, "temperature": 0, "max_tokens": 5}
            with client.stream("POST", "/v1/chat/completions", json=body,
                               headers=headers) as response:  # fmt: skip
                assert sse_payloads(response.read().decode())[-1] == "[DONE]"
            accounts.usage.flush()
            recent = client.get("/api/usage", headers=headers).json()["recent"]
            counted = sorted((r["prompt_tokens"], r["completion_tokens"]) for r in recent)
            assert counted == sorted([(4, whole["usage"]["completion_tokens"]), (4, 5)])
    finally:
        close_accounts(accounts)


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_over_llamacpps_context_is_its_400(
    stream: bool, upstreams: dict[str, LlamaCppUpstream]
) -> None:
    """Counted by estimate, the prompt passes r1serve; llama.cpp refuses it, and the client
    gets that as an OpenAI error with llama.cpp's status and message, no traceback."""
    server = gateway(upstreams["auto"], tokenizer="estimate")
    try:
        words = [{"role": "user", "content": "hello " * (CTX + 500)}]  # a token a word
        response = httpx.post(f"{server.url}/v1/chat/completions", timeout=120,
                              json={"messages": words, "stream": stream})  # fmt: skip
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "context" in error["message"] and error["type"] == "invalid_request_error"
        assert "Traceback" not in response.text
        engine: UpstreamEngine = server.engine  # type: ignore[assignment]
        assert engine.stats().running == 0
    finally:
        server.__exit__()


def test_a_prompt_over_the_context_counted_exactly_stops_in_r1serve(
    gateways: dict[str, LiveServer],
) -> None:
    words = [{"role": "user", "content": "hello " * (CTX + 500)}]
    with pytest.raises(openai.BadRequestError) as caught:
        client_of(gateways["auto"].url).chat.completions.create(model="tiny-r1", messages=words)  # type: ignore[arg-type]
    assert str(CTX) in str(caught.value)


def test_a_refused_key_stops_the_start_and_later_is_a_5xx(
    upstreams: dict[str, LlamaCppUpstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key: r1serve does not start on it. A key the upstream stops taking (rotated there):
    502, r1serve's fault rather than the client's, and the key never in the message."""
    rotated = "R1SERVE_TEST_ROTATED_KEY"
    with pytest.raises(ConfigError, match=f"refused the API key from \\${rotated}"):
        gateway(upstreams["auto"], api_key_env=rotated)
    monkeypatch.setenv(rotated, KEY)
    server = gateway(upstreams["auto"], api_key_env=rotated)
    try:
        monkeypatch.setenv(rotated, "sk-revoked-key")
        with pytest.raises(openai.APIStatusError) as caught:
            client_of(server.url).chat.completions.create(model="tiny-r1", messages=HI)  # type: ignore[arg-type]
        assert caught.value.status_code == 502
        assert "refused r1serve's API key (401)" in str(caught.value)
        assert "sk-revoked-key" not in str(caught.value)
    finally:
        server.__exit__()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_client_that_goes_away_ends_llamacpps_request(
    fmt: str, upstreams: dict[str, LlamaCppUpstream], gateways: dict[str, LiveServer]
) -> None:
    """Without its EOS tiny-r1 would write all BUDGET tokens; the client leaves after the first
    reasoning chunk, and llama.cpp's slot goes idle long before that many."""
    upstream, server = upstreams[fmt], gateways[fmt]
    before = upstream.metric(DECODED)
    body = {"messages": HI, "stream": True, "max_tokens": BUDGET, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 200
        lines = (line for line in response.iter_lines() if '"reasoning"' in line)
        assert next(lines, None) is not None
        assert len(upstream.processing()) == 1  # still generating when the client goes
    assert wait_for(lambda: upstream.processing() == [], timeout=60)
    assert upstream.metric(DECODED) - before < BUDGET // 2
    assert upstream.metric("llamacpp:requests_processing") == 0
    engine: UpstreamEngine = server.engine  # type: ignore[assignment]
    assert wait_for(lambda: engine.stats().running == 0, timeout=10)


def test_stop_in_a_conversation_ends_llamacpps_request(
    upstreams: dict[str, LlamaCppUpstream], gateways: dict[str, LiveServer]
) -> None:
    """The page's Stop: the stored reply ends "stopped", and so does llama.cpp's request."""
    from support.conversations import create, final_message, iter_events

    upstream, server = upstreams["auto"], gateways["auto"]
    before = upstream.metric(DECODED)
    settings = {"ignore_eos": True, "max_tokens": BUDGET, "repetition_guard": False}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        cid = create(http, settings=settings)["id"]
        path = f"/api/conversations/{cid}/messages"
        with http.stream("POST", path, json={"content": "hi"}) as response:
            assert response.status_code == 200, response.read()
            events = iter_events(response.iter_lines())
            mid = next(events).json()["assistant_message"]["id"]
            assert next(e for e in events if '"reasoning' in e.data)
            assert len(upstream.processing()) == 1
            stopped = http.post(f"{path}/{mid}/stop")
            rest = list(events)
        assert stopped.status_code == 200, stopped.text
        message = stopped.json()
        assert (message["status"], message["finish_reason"]) == ("stopped", "abort")
        assert TINY_REASONING.startswith(message["reasoning"][:20])
        assert final_message(rest)["status"] == "stopped"
    assert wait_for(lambda: upstream.processing() == [], timeout=60)
    assert upstream.metric(DECODED) - before < BUDGET // 2


def test_serve_with_the_documented_flags(upstreams: dict[str, LlamaCppUpstream]) -> None:
    """``r1serve serve --engine upstream --upstream-url http://...:PORT/v1`` as docs/scale-out.md
    shows it, in a real process."""
    from support.upstreams import R1ServeProcess

    upstream = upstreams["auto"]
    proc = R1ServeProcess(
        ["-m", "r1serve", "serve", "--engine", "upstream", "--no-auth",
         "--upstream-url", f"{upstream.url}/v1", "--upstream-tokenizer", "upstream",
         "--upstream-api-key-env", "LLAMA_API_KEY"],
        env={"LLAMA_API_KEY": KEY},
    )  # fmt: skip
    try:
        proc.start()
        cards = httpx.get(f"{proc.url}/v1/models", timeout=10).json()["data"]
        assert [(c["id"], c["engine"], c["max_model_len"]) for c in cards] == [
            ("tiny-r1", "upstream", upstream.ctx_per_slot)
        ]
        reasoning, alias, content, finishes, usage = streamed(client_of(proc.url), temperature=0)
        assert (reasoning, alias, content, finishes) == (
            TINY_REASONING, TINY_REASONING, TINY_ANSWER, ["stop"],
        )  # fmt: skip
        assert usage is not None and usage.prompt_tokens == 4
    finally:
        proc.stop()
    output = proc.log.read_text()
    assert KEY not in output and "Traceback" not in output
    assert "llama.cpp" in output  # the summary names how prompts are counted
