"""Open WebUI's browser chat against r1serve, with Open WebUI's default settings (#12).

Not part of ``make test``: it needs Open WebUI in a virtual environment of its own (it pins
its own versions of half of PyPI), and a CPU build of torch so that nothing pulls CUDA:

    python3 -m venv /work/owu-venv
    /work/owu-venv/bin/pip install torch==2.13.0            # the CPU build
    echo torch==2.13.0 > /tmp/owu-constraints.txt
    /work/owu-venv/bin/pip install open-webui -c /tmp/owu-constraints.txt

Then, from the repository root, with the project's environment (it has Playwright):

    PYTHONPATH=src .venv/bin/python bench/open_webui_check.py \\
        --open-webui /work/owu-venv/bin/open-webui --connection openai \\
        --screenshot docs/screenshots/open-webui-chat.png --out /tmp/owu-check

It starts r1serve on tests/fixtures/tiny-r1 with logins on and an API key, a recording proxy in
front of it, and Open WebUI (offline, no login page, its data in a scratch folder) with that key
on an OpenAI connection (``--connection openai``) or an Ollama connection (``ollama``). Headless
Chromium then does what a new user does: opens the page, picks the model, sends "hi" and waits
for the reply. It checks that tiny-r1's answer shows as the reply and its reasoning in Open
WebUI's "Thought for" block, apart from the answer. Every request Open WebUI sent to r1serve
(path, body, status) lands in OUT/requests.jsonl; the logs of both servers in OUT/. Exit status 0
when the chat worked, 1 with the reason otherwise.

Open WebUI's default chat message carries its 36 built-in tools, about 6,600 prompt tokens, more
than tiny-r1's 4096 positions; ``--context`` (default 16384) serves a copy of the model folder
whose config allows more (``--context 0`` shows the refusal a short-context model gets).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import ROOT, ServerProcess, ServerSpec, child_env, free_port

TINY_R1 = ROOT / "tests" / "fixtures" / "tiny-r1" / "hf"
TINY_REASONING = "Okay, the user says hello. I should greet them back."
TINY_ANSWER = "Hello! How can I help you today?"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ADMIN_PASSWORD = "open-webui-check-1"
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}


class RecordingProxy:
    """Forwards every request to r1serve unchanged and records path, body and status."""

    def __init__(self, upstream: str, record: Path) -> None:
        self.upstream = upstream
        self.record = record
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=_METHODS)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the recording proxy did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def requests(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    async def _forward(self, request: Request) -> StreamingResponse:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        client = httpx.AsyncClient(base_url=self.upstream, timeout=httpx.Timeout(300, connect=10))
        upstream = await client.send(
            client.build_request(
                request.method, request.url.path, params=request.query_params,
                headers=headers, content=body,
            ),
            stream=True,
        )  # fmt: skip
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "query": str(request.query_params),
            "headers": _redacted(headers),
            "status": upstream.status_code,
            "body": _parsed(body),
        }
        chunks: list[bytes] = []

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    chunks.append(chunk)
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()
                reply = b"".join(chunks)
                entry["response"] = reply[:4000].decode(errors="replace")
                with self._lock, self.record.open("a") as out:
                    out.write(json.dumps(entry) + "\n")

        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return StreamingResponse(relay(), status_code=upstream.status_code, headers=passed)


_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def _parsed(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body[:2000].decode(errors="replace")


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    keys = {"authorization", "x-api-key", "cookie"}
    return {k: (v[:11] + "…" if k.lower() in keys else v) for k, v in headers.items()}


def make_key(data_dir: Path) -> str:
    """An API key for the admin that r1serve made on its first start."""
    done = subprocess.run(
        [sys.executable, "-m", "r1serve", "keys", "create", "--user", "admin", "--name", "owui"],
        env={**child_env(2), "R1SERVE_DATA_DIR": str(data_dir)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"r1s-[A-Za-z0-9_-]{20,}", done.stdout)
    if found is None:
        raise RuntimeError(f"no key in the output of `r1serve keys create`: {done.stdout!r}")
    return found.group(0)


def open_webui_env(args: argparse.Namespace, data_dir: Path, upstream: str, key: str) -> dict:
    """Open WebUI's defaults, except: offline, no login page, and the one connection to r1serve."""
    env = {
        "PYTHONPATH": "",
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": "open-webui-check",
        "WEBUI_AUTH": "False",
        "HF_HUB_OFFLINE": "1",
        "OFFLINE_MODE": "true",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
        "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
        "ENABLE_VERSION_UPDATE_CHECK": "false",
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
    }
    if args.connection == "openai":
        env |= {
            "ENABLE_OLLAMA_API": "false",
            "OPENAI_API_BASE_URL": f"{upstream}/v1",
            "OPENAI_API_KEY": key,
        }
    else:
        # An Ollama connection's key has no variable of its own: it sits in the connection's
        # config, as Admin Settings → Connections → Ollama API → (connection) → Bearer writes it.
        env |= {
            "ENABLE_OPENAI_API": "false",
            "OLLAMA_BASE_URL": upstream,
            "OLLAMA_API_CONFIGS": json.dumps({"0": {"enable": True, "key": key}}),
        }
    return env


def name_of(model: Path) -> str:
    """The name r1serve serves the model as: tiny-r1 for tests/fixtures/tiny-r1/hf."""
    return model.parent.name if model.name == "hf" else model.stem


def with_context(model: Path, context: int, scratch: Path) -> Path:
    """The HF folder itself, or a copy whose config allows ``context`` positions.

    tiny-r1 says 4096, and Open WebUI 0.12's default request (36 built-in tools) needs about
    6,600 prompt tokens; its one scripted reply does not depend on the prompt, so a copy with
    a longer context still gives it. The weights are linked, not copied.
    """
    config = json.loads((model / "config.json").read_text())
    if config.get("max_position_embeddings", context) >= context:
        return model
    copy = scratch / f"{model.parent.name}-{context}"
    copy.mkdir()
    for item in model.iterdir():
        (copy / item.name).symlink_to(item.resolve())
    (copy / "config.json").unlink()
    config["max_position_embeddings"] = context
    (copy / "config.json").write_text(json.dumps(config, indent=2))
    return copy


@contextlib.contextmanager
def servers(args: argparse.Namespace, out: Path) -> Iterator[tuple[str, RecordingProxy]]:
    """r1serve, a recording proxy in front of it, Open WebUI; yields Open WebUI's url, the proxy."""
    scratch = Path(tempfile.mkdtemp(prefix="owui-check-"))
    r1_data = scratch / "r1serve"
    model = with_context(args.model, args.context, scratch) if args.context else args.model
    name = name_of(args.model)
    r1serve = ServerSpec(
        "r1serve",
        [sys.executable, "-m", "r1serve", "serve", "--model", str(model),
         "--served-model-name", name,
         "--port", "{port}", "--host", "127.0.0.1", "--device", "cpu", "--threads", "2"],
        ready_path="/health",
        env={"R1SERVE_DATA_DIR": str(r1_data), "R1SERVE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )  # fmt: skip
    with ServerProcess(r1serve, threads=2, log_dir=out) as r1:
        key = make_key(r1_data)
        with RecordingProxy(r1.url, out / "requests.jsonl") as proxy:
            env = open_webui_env(args, scratch / "open-webui", proxy.url, key)
            owui = ServerSpec(
                "open-webui",
                [args.open_webui, "serve", "--host", "127.0.0.1", "--port", "{port}"],
                ready_path="/health",
                startup_timeout_s=args.startup_timeout,
                env=env,
            )
            with ServerProcess(owui, threads=2, log_dir=out) as webui:
                yield webui.url, proxy


def chat(page: Page, url: str, model: str, timeout_ms: float) -> dict[str, str]:
    """Open the page, pick the model, send "hi", and return what the reply shows."""
    page.goto(url, wait_until="load", timeout=timeout_ms)  # socket.io never lets it idle
    page.wait_for_selector("#chat-input", timeout=timeout_ms)
    with contextlib.suppress(PlaywrightTimeout):  # the "what's new" dialog a new user sees
        page.get_by_role("button", name="Okay, Let's Go!").click(timeout=10_000)
    selector = page.locator("#model-selector-model-button")  # in the input box since 0.12
    selector.click()
    listbox = page.get_by_role("listbox")
    listbox.get_by_text(model, exact=False).first.click()
    label = selector.get_attribute("aria-label") or ""
    if model not in label:
        raise RuntimeError(f"picked {model!r}, the model selector says {label!r}")
    page.locator("#chat-input").click()
    page.keyboard.type("hi")
    page.keyboard.press("Enter")
    reply = page.locator(".chat-assistant").last
    reply.get_by_text(TINY_ANSWER).first.wait_for(timeout=timeout_ms)
    thought = reply.get_by_text(re.compile("Thought for|Thinking")).first
    thought.wait_for(timeout=10_000)
    shown: dict[str, str] = {"reply": reply.inner_text(), "thought": thought.inner_text()}
    thought.click()  # unfold the reasoning
    reply.get_by_text(TINY_REASONING).first.wait_for(timeout=10_000)
    shown["unfolded"] = reply.inner_text()
    return shown


def check(shown: dict[str, str]) -> list[str]:
    """What is wrong with the reply as Open WebUI shows it; empty when all is right."""
    problems = []
    folded = shown["reply"]
    if TINY_ANSWER not in folded:
        problems.append("the answer is not shown")
    if TINY_REASONING in folded:
        problems.append("the reasoning shows in the reply before the Thought block is opened")
    if "<think>" in shown["unfolded"] or "</think>" in shown["unfolded"]:
        problems.append("raw <think> tags are shown")
    if TINY_REASONING not in shown["unfolded"]:
        problems.append("the reasoning is not in the Thought block")
    if not re.search("Thought for", shown["thought"]):
        problems.append(f"no 'Thought for' block, found {shown['thought']!r}")
    return problems


def summary(requests: list[dict[str, Any]]) -> str:
    lines = []
    for entry in requests:
        body = entry["body"]
        fields = ",".join(sorted(body)) if isinstance(body, dict) else ""
        lines.append(f"  {entry['status']} {entry['method']} {entry['path']} {fields}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open-webui", default="/work/owu-venv/bin/open-webui")
    parser.add_argument("--connection", choices=["openai", "ollama"], default="openai")
    parser.add_argument("--model", type=Path, default=TINY_R1)
    parser.add_argument(
        "--context", type=int, default=16384,
        help="serve a copy of the model's folder that allows this many positions (0: as it is)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "owui-check")
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--reply-timeout", type=float, default=180.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("requests.jsonl", "r1serve.log", "open-webui.log"):
        (args.out / name).unlink(missing_ok=True)
    timeout_ms = args.reply_timeout * 1000
    problems: list[str] = []
    with servers(args, args.out) as (url, proxy), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        try:
            shown = chat(page, url, name_of(args.model), timeout_ms)
            problems = check(shown)
            print(json.dumps(shown, indent=2))
        except Exception as exc:  # report what the page showed, then fail
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            page.screenshot(path=str(args.out / "chat.png"))
            (args.out / "page.html").write_text(page.content())
            if args.screenshot:
                page.screenshot(path=str(args.screenshot))
            browser.close()
        requests = proxy.requests()
    print(f"requests Open WebUI sent to r1serve (all in {args.out / 'requests.jsonl'}):")
    print(summary(requests))
    refused = [r for r in requests if r["status"] >= 400]
    problems += [f"r1serve answered {r['status']} to {r['method']} {r['path']}" for r in refused]
    for problem in problems:
        print("FAIL:", problem)
    if not problems:
        print(
            f"OK: Open WebUI's chat ({args.connection} connection) shows tiny-r1's reasoning apart"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
