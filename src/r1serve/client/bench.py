"""A serving benchmark client for any OpenAI-compatible server (``r1serve bench``).

For each concurrency level it keeps that many streaming requests in flight (a closed loop, as
``vllm bench serve --max-concurrency`` with no request rate) and times every chunk as it
arrives. One event loop and one pooled httpx client: the client must stay light, or it takes
CPU the server under test needs; its own CPU time per request is measured and reported.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from r1serve.client.bench_stats import LevelSummary, RequestRecord, summarize
from r1serve.client.sse import aiter_json
from r1serve.errors import ConfigError, R1ServeError

Endpoint = Literal["chat", "completions"]
PROMPT_SETS = ("chat", "reasoning")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True, slots=True)
class BenchPrompt:
    """One prompt: chat messages, and the raw text sent to ``/v1/completions``."""

    messages: tuple[Mapping[str, Any], ...]
    text: str


@dataclass(frozen=True)
class BenchConfig:
    """What to run; ``requests`` or ``duration_s`` bounds each level."""

    url: str
    model: str | None = None
    api_key: str | None = None
    endpoint: Endpoint = "chat"
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int | None = 32
    duration_s: float | None = None
    prompts: str = "chat"
    max_tokens: int = 128
    temperature: float = 0.0
    ignore_eos: bool = False
    warmup: int = 1
    seed: int = 0
    timeout_s: float = 600.0
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise ConfigError("concurrency levels must be whole numbers of at least 1")
        if (self.requests is None) == (self.duration_s is None):
            raise ConfigError("give either a number of requests or a duration per level")
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"requests must be at least 1, got {self.requests}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if self.max_tokens < 1:
            raise ConfigError(f"max tokens must be at least 1, got {self.max_tokens}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be 0 or more, got {self.warmup}")


class BenchListener(Protocol):
    """Told about progress (the CLI draws a progress bar from it); concurrency None: warm-up."""

    def level_started(self, concurrency: int | None, requests: int | None) -> None: ...

    def request_done(self, record: RequestRecord) -> None: ...


class _Silent:
    def level_started(self, concurrency: int | None, requests: int | None) -> None:
        pass

    def request_done(self, record: RequestRecord) -> None:
        pass


@dataclass(frozen=True)
class BenchRun:
    """The result of a whole sweep."""

    model: str
    served_models: list[str]
    prompt_count: int
    warmup_errors: int
    levels: list[LevelSummary]
    notes: list[str]


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``."""
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--concurrency takes numbers split by commas, got {text!r}") from None
    if not levels or any(level < 1 for level in levels):
        raise ConfigError(f"--concurrency levels must be at least 1, got {text!r}")
    return levels


def load_prompts(spec: str) -> list[BenchPrompt]:
    """A shipped prompt set (``chat``, ``reasoning``) or a JSONL file of them.

    Each line is ``{"messages": [...]}`` or ``{"prompt": "text"}``; the completions endpoint
    gets ``prompt``, or the last user message of ``messages``.
    """
    if spec in PROMPT_SETS:
        source = f"prompt set {spec!r}"
        text = resources.files("r1serve.client").joinpath(f"prompts/{spec}.jsonl").read_text()
    else:
        path = Path(spec)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read prompts {spec!r} (use chat, reasoning or a .jsonl file): {exc}"
            ) from None
    prompts = [
        _prompt_from_line(line, f"{source} line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]
    if not prompts:
        raise ConfigError(f"{source} holds no prompts")
    return prompts


def _prompt_from_line(line: str, where: str) -> BenchPrompt:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from None
    if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        text = item["prompt"]
        return BenchPrompt(({"role": "user", "content": text},), text)
    messages = item.get("messages") if isinstance(item, dict) else None
    if (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
    ):
        users = [m["content"] for m in messages if m.get("role") == "user"]
        return BenchPrompt(tuple(messages), users[-1] if users else messages[-1]["content"])
    raise ConfigError(f'{where}: expected {{"prompt": "..."}} or {{"messages": [...]}}')


def answer_started(content: str) -> bool:
    """Whether answer text has begun in ``content`` so far.

    Servers that leave the reasoning in ``content`` as ``<think>…</think>`` have not begun the
    answer until text follows the closing tag.
    """
    text = content.lstrip()
    if not text:
        return False
    if _THINK_OPEN.startswith(text):  # maybe the start of "<think>": wait for more
        return False
    if not text.startswith(_THINK_OPEN):
        return True
    _, closed, after = text.partition(_THINK_CLOSE)
    return bool(closed) and bool(after.strip())


def request_body(config: BenchConfig, model: str, prompt: BenchPrompt) -> dict[str, Any]:
    """The JSON body of one streaming request."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.endpoint == "chat":
        body["messages"] = list(prompt.messages)
    else:
        body["prompt"] = prompt.text
    if config.ignore_eos:
        body["ignore_eos"] = True
    body.update(config.extra_body)
    return body


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        message = error["message"] if isinstance(error, dict) else error
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    return f"HTTP {response.status_code}: {' '.join(str(message).split())[:300]}"


def key_hint(api_key: str | None) -> str:
    """What to do about a 401: where the key comes from (``--api-key`` or the environment)."""
    if api_key:
        return "the server refused the API key; check --api-key or R1SERVE_API_KEY"
    return "the server needs an API key; pass --api-key or set R1SERVE_API_KEY"


def all_failed(run: BenchRun, api_key: str | None) -> str:
    """The error of a run in which no request succeeded: the first one, and what to do on a 401."""
    first = next((m for level in run.levels for m in level.error_messages), "no output")
    hint = f"; {key_hint(api_key)}" if first.startswith("HTTP 401") else ""
    return f"every request failed; first error: {first}{hint}"


def chunk_text(chunk: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(reasoning, answer, finish_reason) of a chat or completion chunk's first choice."""
    choices = chunk.get("choices") or []
    if not choices:
        return "", "", None
    choice = choices[0]
    delta = choice.get("delta")
    if delta is None:  # text completion
        return "", choice.get("text") or "", choice.get("finish_reason")
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    return reasoning, delta.get("content") or "", choice.get("finish_reason")


async def send_request(
    http: httpx.AsyncClient, path: str, body: Mapping[str, Any]
) -> RequestRecord:
    """Send one streaming request and time its chunks; failures become the record's error."""
    record = RequestRecord()
    content = ""  # answer text, kept only until the answer has begun
    answered = False
    sent = time.perf_counter()
    last = sent
    try:
        async with http.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                record.error = _error_text(response)
                return record
            async for chunk in aiter_json(response):
                now = time.perf_counter()
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    record.error = f"error in stream: {' '.join(str(message).split())[:300]}"
                    return record
                usage = chunk.get("usage")
                if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                    record.usage_tokens = usage["completion_tokens"]
                reasoning, answer, finish = chunk_text(chunk)
                record.finish_reason = finish or record.finish_reason
                if not (reasoning or answer):
                    continue  # role, finish and usage chunks are not output
                if record.ttft is None:
                    record.ttft = now - sent
                else:
                    record.itl.append(now - last)
                last = now
                record.chunks += 1
                if answer and not answered:
                    content += answer
                    if answer_started(content):
                        answered = True
                        record.ttfo = now - sent
                        content = ""
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return record
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        record.error = f"malformed stream: {exc}"
        return record
    record.latency = time.perf_counter() - sent
    record.ok = record.ttft is not None
    if not record.ok:
        record.error = "the stream ended without any output"
    return record


class Bench:
    """Runs a ``BenchConfig`` against a server."""

    def __init__(
        self,
        config: BenchConfig,
        prompts: Sequence[BenchPrompt],
        *,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: a stand-in server
    ) -> None:
        self.config = config
        self.transport = transport
        order = list(prompts)
        random.Random(config.seed).shuffle(order)  # the same order for every server compared
        self.prompts = order
        self.path = "/v1/chat/completions" if config.endpoint == "chat" else "/v1/completions"

    def _client(self, connections: int) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        return httpx.AsyncClient(
            base_url=self.config.url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self.config.timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=self.transport,
        )

    async def served_models(self, http: httpx.AsyncClient) -> list[str]:
        """The ids in ``/v1/models``; R1ServeError when the server cannot be reached."""
        try:
            response = await http.get("/v1/models", timeout=10.0)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise R1ServeError(f"cannot reach {self.config.url}: {reason}") from None
        if response.status_code == 401:
            raise R1ServeError(
                f"{self.config.url}/v1/models answered {_error_text(response)}; "
                f"{key_hint(self.config.api_key)}"
            )
        if response.status_code != 200:
            if self.config.model:  # some servers lack /v1/models; the model was named anyway
                return []
            raise R1ServeError(f"{self.config.url}/v1/models answered {_error_text(response)}")
        try:
            return [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise R1ServeError(f"{self.config.url}/v1/models is not an OpenAI model list") from None

    async def run_level(
        self,
        http: httpx.AsyncClient,
        model: str,
        concurrency: int,
        listener: BenchListener,
        requests: int | None,
        duration_s: float | None = None,
    ) -> tuple[list[RequestRecord], float, float]:
        """Keep ``concurrency`` requests in flight; (records, wall seconds, client CPU seconds)."""
        counter = itertools.count()
        records: list[RequestRecord] = []
        started = time.perf_counter()
        deadline = None if duration_s is None else started + duration_s

        async def worker() -> None:
            while True:
                index = next(counter)
                if requests is not None and index >= requests:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                prompt = self.prompts[index % len(self.prompts)]
                body = request_body(self.config, model, prompt)
                record = await send_request(http, self.path, body)
                records.append(record)
                listener.request_done(record)

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return records, time.perf_counter() - started, time.process_time() - cpu

    async def run(self, listener: BenchListener | None = None) -> BenchRun:
        """Warm up, then measure each concurrency level in turn."""
        listener = listener or _Silent()
        config = self.config
        async with self._client(max(config.concurrency)) as http:
            served = await self.served_models(http)
            model = config.model or (served[0] if served else "")
            if not model:
                raise R1ServeError(f"{config.url}/v1/models lists no model; pass --model")
            warmup_errors = 0
            if config.warmup:
                listener.level_started(None, config.warmup)
                records, _, _ = await self.run_level(http, model, 1, listener, config.warmup)
                warmup_errors = sum(not r.ok for r in records)
            levels = []
            for concurrency in config.concurrency:
                listener.level_started(concurrency, config.requests)
                records, wall, cpu = await self.run_level(
                    http, model, concurrency, listener, config.requests, config.duration_s
                )
                levels.append(
                    summarize(
                        concurrency,
                        records,
                        wall_s=wall,
                        client_cpu_s=cpu,
                        max_tokens=config.max_tokens,
                    )
                )
        notes = self._notes(levels)
        return BenchRun(model, served, len(self.prompts), warmup_errors, levels, notes)

    def _notes(self, levels: list[LevelSummary]) -> list[str]:
        notes = []
        early = sum(level.ended_before_max_tokens for level in levels)
        done = sum(level.completed for level in levels)
        if self.config.ignore_eos and early:
            notes.append(
                f"ignore_eos was sent, but {early} of {done} requests ended before max_tokens: "
                "the server may ignore it"
            )
        sources = {level.token_count_source for level in levels} - {"none"}
        if sources - {"usage"}:
            notes.append(
                "the server sent no usage for some requests: output tokens were counted as text "
                "chunks, which undercounts when a chunk carries several tokens"
            )
        return notes
