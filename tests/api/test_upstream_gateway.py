"""r1serve in front of a scripted OpenAI-style upstream (a real server in a thread): the
official openai client sees both reasoning field names, the API key travels, errors keep their
status class, a closed stream disconnects the upstream, full or dead replicas give 503."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from r1serve.engine.upstream import UpstreamConfig, UpstreamEngine, build_upstream
from support.api import LiveServer, free_port, make_settings, sse_payloads, wait_for
from support.models import TINY_ANSWER, TINY_REASONING
from support.upstreams import ScriptedUpstream

KEY_ENV = "R1SERVE_TEST_UPSTREAM_KEY"
HI = [{"role": "user", "content": "hi"}]


def gateway(*urls: str, **config: object) -> LiveServer:
    engine = build_upstream(UpstreamConfig(urls=urls, api_key_env=KEY_ENV, **config))  # type: ignore[arg-type]
    return LiveServer(engine, make_settings(allowed_hosts=["127.0.0.1"])).__enter__()  # type: ignore[arg-type]


@pytest.fixture
def served() -> Iterator[list[LiveServer]]:
    servers: list[LiveServer] = []
    yield servers
    for server in servers:
        server.__exit__()


@pytest.mark.parametrize(
    "transcript",
    [
        "vllm_reasoning.sse",
        "vllm_reasoning_content.sse",
        "sglang.sse",
        "ollama.sse",
        "think_in_content.sse",
        "llamacpp.sse",
        "llamacpp_raw.sse",
    ],
)
def test_openai_client_gets_the_split_under_both_names(
    transcript: str, served: list[LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-upstream-secret")
    with ScriptedUpstream(transcript) as upstream:
        served.append(server := gateway(upstream.url))
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="up-model",
            messages=HI,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        reasoning, reasoning_alias, content, usage = [], [], [], None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                reasoning.append(extra.get("reasoning_content") or "")
                reasoning_alias.append(extra.get("reasoning") or "")
                content.append(choice.delta.content or "")
        assert "".join(reasoning) == "".join(reasoning_alias) == TINY_REASONING
        assert "".join(content) == TINY_ANSWER
        assert usage is not None and usage.completion_tokens == 27
        whole = client.chat.completions.create(model="up-model", messages=HI)  # type: ignore[arg-type]
        message = whole.choices[0].message
        assert message.content == TINY_ANSWER
        assert (message.model_extra or {})["reasoning_content"] == TINY_REASONING
        assert (message.model_extra or {})["reasoning"] == TINY_REASONING
        assert whole.usage is not None and whole.usage.completion_tokens == 27
        sent = upstream.bodies[-1]
        assert sent["messages"] == HI and sent["stream"] is True
        assert sent["stream_options"] == {"include_usage": True} and sent["model"] == "up-model"
        assert all(h.get("authorization") == "Bearer sk-upstream-secret" for h in upstream.headers)


def test_closing_the_stream_disconnects_the_upstream(served: list[LiveServer]) -> None:
    with ScriptedUpstream("vllm_reasoning.sse", delay_s=0.3) as upstream:
        served.append(server := gateway(upstream.url))
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            timeout=30,
            json={"messages": HI, "stream": True},
        ) as response:
            for line in response.iter_lines():
                if '"reasoning"' in line:
                    break  # the client goes away mid-reply
        assert wait_for(lambda: upstream.disconnects == 1, timeout=10)
        assert upstream.lines_sent < len(upstream.lines)
        engine: UpstreamEngine = server.engine  # type: ignore[assignment]
        assert wait_for(lambda: engine.stats().running == 0, timeout=10)


@pytest.mark.parametrize(
    ("status", "expected"), [(400, 400), (404, 404), (401, 502), (500, 502), (503, 503)]
)
def test_upstream_errors_keep_their_status_class(
    status: int, expected: int, served: list[LiveServer]
) -> None:
    error = {
        "error": {"message": "max_tokens is too large for this model", "type": "BadRequestError"}
    }
    with ScriptedUpstream("", status=status, error=error) as upstream:
        served.append(server := gateway(upstream.url))
        response = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30
        )
        assert response.status_code == expected
        body = response.json()
        assert "max_tokens is too large" in body["error"]["message"]
        assert "Traceback" not in response.text


def test_a_dead_upstream_gives_503_with_retry_after(served: list[LiveServer]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    served.append(server := gateway(dead, model="m", health_interval_s=0.2))
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30)
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert "down" in response.json()["error"]["message"]


def test_a_full_replica_gives_503_and_frees_its_slot(served: list[LiveServer]) -> None:
    with ScriptedUpstream("vllm_reasoning.sse", delay_s=0.2) as upstream:
        served.append(server := gateway(upstream.url, max_concurrency_per_replica=1))
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            timeout=30,
            json={"messages": HI, "stream": True},
        ) as first:
            lines = first.iter_lines()  # kept: a dropped iterator would close the response
            next(lines)
            second = httpx.post(
                f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30
            )
            assert second.status_code == 503 and "full" in second.json()["error"]["message"]
            assert "Retry-After" in second.headers
            rest = "\n".join(lines)
        assert sse_payloads(rest)[-1] == "[DONE]"
        third = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30)
        assert third.status_code == 200


def test_logprobs_are_refused_clearly(served: list[LiveServer]) -> None:
    with ScriptedUpstream("vllm_reasoning.sse") as upstream:
        served.append(server := gateway(upstream.url))
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            timeout=30,
            json={"messages": HI, "logprobs": True, "top_logprobs": 2},
        )
        assert response.status_code == 400 and "logprobs" in response.json()["error"]["message"]
        assert upstream.bodies == []


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [True, False])
def test_the_upstreams_tool_calls_reach_the_openai_client(
    stream: bool, served: list[LiveServer]
) -> None:
    """Tools go to the upstream as they are; its streamed calls (arguments in pieces) come back
    as OpenAI tool calls, the reasoning apart, finish_reason tool_calls; the tool results of
    the next turn go back as OpenAI messages."""
    with ScriptedUpstream("vllm_tool_calls.sse") as upstream:
        served.append(server := gateway(upstream.url))
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        asked = [{"role": "user", "content": "Weather and time in Paris?"}]
        calls: dict[int, dict[str, str]] = {}
        reasoning, finish = "", None
        if stream:
            for chunk in client.chat.completions.create(
                model="up-model",
                messages=asked,
                tools=[WEATHER, TIME],
                stream=True,  # type: ignore[arg-type, list-item]
            ):
                for choice in chunk.choices:
                    reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                    finish = choice.finish_reason or finish
                    for piece in choice.delta.tool_calls or []:
                        call = calls.setdefault(piece.index, {"id": "", "name": "", "args": ""})
                        call["id"] += piece.id or ""
                        if piece.function is not None:
                            call["name"] += piece.function.name or ""
                            call["args"] += piece.function.arguments or ""
        else:
            whole = client.chat.completions.create(
                model="up-model",
                messages=asked,
                tools=[WEATHER, TIME],  # type: ignore[arg-type, list-item]
            )
            choice = whole.choices[0]
            finish = choice.finish_reason
            reasoning = (choice.message.model_extra or {})["reasoning_content"]
            for n, tool_call in enumerate(choice.message.tool_calls or []):
                function = tool_call.function  # type: ignore[union-attr]
                calls[n] = {"id": tool_call.id, "name": function.name, "args": function.arguments}
        assert finish == "tool_calls" and reasoning == "The user wants the weather."
        assert [(c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"zone": "CET"}),
        ]
        assert all(c["id"].startswith("call_") for c in calls.values())
        sent = upstream.bodies[-1]
        assert sent["tools"] == [WEATHER, TIME] and "tool_choice" not in sent
        # The next turn: the calls and their results go back as OpenAI messages.
        ids = [calls[0]["id"], calls[1]["id"]]
        follow = [
            *asked,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": ids[0], "type": "function",
                     "function": {"name": "get_weather", "arguments": calls[0]["args"]}},
                    {"id": ids[1], "type": "function",
                     "function": {"name": "get_time", "arguments": calls[1]["args"]}},
                ],
            },
            {"role": "tool", "tool_call_id": ids[0], "content": "18 C"},
            {"role": "tool", "tool_call_id": ids[1], "content": "14:00"},
        ]  # fmt: skip
        client.chat.completions.create(
            model="up-model",
            messages=follow,
            tools=[WEATHER, TIME],
            tool_choice="required",  # type: ignore[arg-type, list-item]
        )
        sent = upstream.bodies[-1]
        assert sent["tool_choice"] == "required"
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": calls[0]["args"],
        }
        assert sent["messages"][2] == {"role": "tool", "content": "18 C", "tool_call_id": ids[0]}
        client.chat.completions.create(
            model="up-model",
            messages=asked,  # type: ignore[arg-type]
            tools=[WEATHER, TIME],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
        assert upstream.bodies[-1]["tool_choice"] == {
            "type": "function",
            "function": {"name": "get_time"},
        }


def test_prompts_are_counted_by_the_upstreams_tokenize(served: list[LiveServer]) -> None:
    with ScriptedUpstream("vllm_reasoning.sse", tokenize=True) as upstream:
        engine = build_upstream(UpstreamConfig(urls=(upstream.url,)))
        assert "tokenize" in engine.counter_name
        prompt = engine.render_chat([{"role": "user", "content": "one two three"}])
        assert len(prompt.token_ids) == 6  # the scripted /tokenize: words + 3
        assert engine.context_length == 2048  # max_model_len from /v1/models
    with ScriptedUpstream("vllm_reasoning.sse") as upstream:
        engine = build_upstream(UpstreamConfig(urls=(upstream.url,)))
        assert engine.counter_name.startswith("estimate")
        prompt = engine.render_chat([{"role": "user", "content": "x" * 40}])
        assert len(prompt.token_ids) == 10 + 4


def test_gateway_metrics_name_each_replica(served: list[LiveServer]) -> None:
    with ScriptedUpstream("vllm_reasoning.sse") as upstream:
        served.append(server := gateway(upstream.url))
        assert (
            httpx.post(
                f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30
            ).status_code
            == 200
        )
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        replica = f'replica="{upstream.url}"'
        assert any(
            line.startswith("r1serve_upstream_requests_total{")
            and replica in line
            and line.endswith(" 1.0")
            for line in text.splitlines()
        )
        assert any(
            line.startswith("r1serve_upstream_up{") and replica in line and line.endswith(" 1.0")
            for line in text.splitlines()
        )
        assert "r1serve_upstream_request_seconds_bucket" in text


def test_a_failing_replica_is_skipped_before_anything_is_sent(served: list[LiveServer]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with (
        ScriptedUpstream("", status=500) as broken,
        ScriptedUpstream("sglang.sse") as healthy,
    ):
        served.append(server := gateway(dead, broken.url, healthy.url, model="up-model"))
        for _ in range(3):
            response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI},
                                  timeout=30)  # fmt: skip
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == TINY_ANSWER
        assert len(healthy.bodies) == 3
        engine: UpstreamEngine = server.engine  # type: ignore[assignment]
        assert [r.up for r in engine.pool] == [False, True, True]  # 500s do not eject
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert f'kind="status",model="up-model",replica="{broken.url}"' in text


def test_upstream_urls_come_as_a_comma_list_or_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1SERVE_UPSTREAM_URL", "http://a:8000/v1, http://b:8000/v1")
    assert make_settings().upstream_url == ["http://a:8000/v1", "http://b:8000/v1"]
    settings = make_settings(upstream_url=["http://a/v1,http://b/v1", "http://c/v1"])
    config = UpstreamConfig.from_settings(settings)
    assert config.urls == ("http://a/v1", "http://b/v1", "http://c/v1")


def test_quotas_count_the_upstreams_usage() -> None:
    from fastapi.testclient import TestClient

    from r1serve.api.app import create_app
    from r1serve.auth import close_accounts
    from support.accounts import BASE_URL, SecureApp, secure_settings, test_accounts

    with ScriptedUpstream("vllm_reasoning.sse") as upstream:
        settings = secure_settings()
        accounts = test_accounts(settings)
        engine = build_upstream(UpstreamConfig(urls=(upstream.url,)))
        try:
            with TestClient(create_app(settings, engine, accounts), base_url=BASE_URL) as client:
                app = SecureApp(client, accounts, engine)  # type: ignore[arg-type]
                app.add_user("ada")
                headers = {"Authorization": f"Bearer {app.key_for('ada')}"}
                whole = client.post("/v1/chat/completions", json={"messages": HI}, headers=headers)
                assert whole.json()["usage"]["completion_tokens"] == 27
                body = {"messages": HI, "stream": True}
                with client.stream("POST", "/v1/chat/completions", json=body,
                                   headers=headers) as response:  # fmt: skip
                    assert sse_payloads(response.read().decode())[-1] == "[DONE]"
                accounts.usage.flush()
                usage = client.get("/api/usage", headers=headers).json()
                recent = usage["recent"]
                assert [r["completion_tokens"] for r in recent] == [27, 27]
                assert all(r["prompt_tokens"] > 0 for r in recent)
        finally:
            close_accounts(accounts)


def test_time_limits_and_a_silent_upstream(served: list[LiveServer]) -> None:
    with ScriptedUpstream("vllm_reasoning.sse", delay_s=0.5) as upstream:
        served.append(server := gateway(upstream.url, chunk_timeout_s=0.2))
        response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI},
                              timeout=30)  # fmt: skip
        assert response.status_code == 504
        assert "sent nothing for 0.2 s" in response.json()["error"]["message"]
        served.append(patient := gateway(upstream.url))
        response = httpx.post(f"{patient.url}/v1/chat/completions", timeout=30,
                              json={"messages": HI, "timeout": 1.2})  # fmt: skip
        assert response.status_code == 200
        assert response.json()["choices"][0]["finish_reason"] == "timeout"
        engine: UpstreamEngine = patient.engine  # type: ignore[assignment]
        assert wait_for(lambda: engine.stats().running == 0, timeout=10)
        assert wait_for(lambda: upstream.disconnects >= 2, timeout=10)


def test_the_ollama_api_over_an_upstream(served: list[LiveServer]) -> None:
    with ScriptedUpstream("ollama.sse") as upstream:
        served.append(server := gateway(upstream.url))
        body = {"model": "up-model", "messages": HI, "stream": False, "think": True}
        reply = httpx.post(f"{server.url}/api/chat", json=body, timeout=30).json()
        assert reply["message"]["thinking"] == TINY_REASONING
        assert reply["message"]["content"] == TINY_ANSWER
        assert reply["eval_count"] == 27
