"""Upstream servers for the upstream engine's tests.

- ``R1ServeProcess``: a real r1serve process (``python -m r1serve serve`` on tiny-r1, or
  ``support.fake_server`` on the scripted fake engine), killed with SIGKILL when asked.
- ``LlamaCppUpstream``: llama.cpp's own server (``support.llamacpp_server``, through
  xllamacpp) on tiny-r1's GGUF in its own process; its ``/slots`` and ``/metrics`` tell when
  and how far requests ran.
- ``ScriptedUpstream``: a tiny OpenAI-style server in a thread that replays a recorded stream
  (``tests/fixtures/upstream/*.sse``), records each request's body and headers, and notices
  when r1serve drops the connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from support.api import free_port

ROOT = Path(__file__).parents[2]
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "upstream"


class R1ServeProcess:
    """An r1serve server in a child process, on a fixed port (so it can come back on it)."""

    def __init__(
        self, args: list[str], *, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="r1serve-upstream-", suffix=".log")[1])

    def start(self, timeout: float = 180) -> R1ServeProcess:
        self.launch()
        return self.wait(timeout)

    def launch(self) -> R1ServeProcess:
        """Start the process without waiting for it (several then load in parallel)."""
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}",
            "R1SERVE_DATA_DIR": tempfile.mkdtemp(prefix="r1serve-upstream-data-"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args, "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return self

    def wait(self, timeout: float = 180) -> R1ServeProcess:
        """Until /health answers; RuntimeError with the log's tail if it exits or never does."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"upstream exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"upstream did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to its open connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of its /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for line in text.splitlines():
            named = line.startswith(name + "{") or line.startswith(name + " ")
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def fake_upstream(
    reply: str, *, delay_s: float = 0.0, repeat: bool = False, model: str = "fake-model"
) -> R1ServeProcess:
    """r1serve (no auth) on the scripted fake engine, in its own process."""
    args = [
        "-m",
        "support.fake_server",
        "--reply",
        reply,
        "--delay",
        str(delay_s),
        "--model",
        model,
    ]
    if repeat:
        args.append("--repeat")
    return R1ServeProcess(args)


def tiny_r1_upstream() -> R1ServeProcess:
    """r1serve serving tiny-r1 (transformers engine) in its own process, no auth."""
    model = ROOT / "tests" / "fixtures" / "tiny-r1" / "hf"
    return R1ServeProcess(
        ["-m", "r1serve", "serve", "--model", str(model), "--no-auth", "--engine", "transformers"]
    )


class LlamaCppUpstream(R1ServeProcess):
    """llama.cpp's server on tiny-r1.gguf in a child process (``/health`` is 200 once loaded)."""

    def __init__(
        self,
        *,
        reasoning_format: str = "auto",
        alias: str = "tiny-r1",
        slots: int = 2,
        ctx_per_slot: int = 2048,
        api_key: str = "",
    ) -> None:
        model = ROOT / "tests" / "fixtures" / "tiny-r1" / "tiny-r1.gguf"
        args = ["-m", "support.llamacpp_server", "--model", str(model), "--alias", alias,
                "--slots", str(slots), "--ctx-per-slot", str(ctx_per_slot),
                "--reasoning-format", reasoning_format, "--api-key", api_key]  # fmt: skip
        super().__init__(args)
        self.api_key = api_key
        self.ctx_per_slot = ctx_per_slot

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def slots(self) -> list[dict[str, Any]]:
        """``GET /slots``: one entry per slot, with ``is_processing`` and ``next_token``."""
        response = httpx.get(f"{self.url}/slots", headers=self._headers(), timeout=10)
        response.raise_for_status()
        slots: list[dict[str, Any]] = response.json()
        return slots

    def processing(self) -> list[int]:
        """Ids of the slots generating now (a slot's own counts reset when its request ends:
        ``llamacpp:n_decode_total`` in ``metric`` tells how far requests went)."""
        return [int(slot["id"]) for slot in self.slots() if slot.get("is_processing")]

    def metric(self, name: str, **labels: str) -> float:
        """One sample of llama.cpp's Prometheus ``/metrics`` (``llamacpp:...``; 0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", headers=self._headers(), timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def transcript_lines(name: str) -> list[str]:
    return (TRANSCRIPTS / name).read_text(encoding="utf-8").splitlines()


class ScriptedUpstream:
    """Replays a transcript per request, in a uvicorn thread; records what it was sent."""

    def __init__(
        self,
        transcript: str,
        *,
        model: str = "up-model",
        delay_s: float = 0.0,
        status: int = 200,
        error: dict[str, Any] | None = None,
        tokenize: bool = False,
    ) -> None:
        self.lines = transcript_lines(transcript) if transcript else []
        self.model = model
        self.delay_s = delay_s
        self.status = status
        self.error = error
        self.tokenize_offered = tokenize
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects = 0
        self.lines_sent = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._complete, methods=["POST"]),
                Route("/v1/completions", self._complete, methods=["POST"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _models(self, request: Request) -> JSONResponse:
        self.headers.append(dict(request.headers))
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "max_model_len": 2048}],
            }
        )

    async def _tokenize(self, request: Request) -> JSONResponse:
        if not self.tokenize_offered:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = await request.json()
        text = body.get("prompt") or "".join(
            str(m.get("content")) for m in body.get("messages", [])
        )
        tokens = list(range(len(text.split()) + 3))
        return JSONResponse({"count": len(tokens), "max_model_len": 2048, "tokens": tokens})

    async def _complete(self, request: Request) -> Any:
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.status != 200:
            return JSONResponse(
                self.error or {"error": {"message": "scripted failure"}}, status_code=self.status
            )

        async def lines() -> Any:
            try:
                for line in self.lines:
                    if self.delay_s and line.startswith("data:"):
                        await asyncio.sleep(self.delay_s)
                    self.lines_sent += 1
                    yield line + "\n"
            except asyncio.CancelledError:
                self.disconnects += 1
                raise

        return StreamingResponse(lines(), media_type="text/event-stream")

    def __enter__(self) -> ScriptedUpstream:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted upstream did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
