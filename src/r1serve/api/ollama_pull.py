"""``/api/pull`` over r1serve's own pull (``catalog.pull``): its progress as Ollama status lines.

The pull runs in a worker thread, as `r1serve pull` would; progress crosses into asyncio through
a queue. A client that goes away stops the download at the next chunk (the pull resumes later).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from r1serve.api.ollama_mapping import untagged
from r1serve.catalog.pull import PullOptions, PullResult, parse_pull_target, pull
from r1serve.errors import DownloadError, R1ServeError, RequestError

Line = dict[str, Any]
_END = object()


class _Cancelled(DownloadError):
    pass


class QueueProgress:
    """``TransferProgress`` that sends Ollama status lines to an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        self._loop = loop
        self._queue = queue
        self._done: dict[str, tuple[int, int]] = {}
        self.cancelled = threading.Event()

    def _put(self, item: object) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _status(self, path: str) -> None:
        completed, total = self._done[path]
        self._put(
            {"status": f"pulling {path}", "digest": path, "total": total, "completed": completed}
        )

    def start_file(self, path: str, total: int, done: int) -> None:
        self._done[path] = (done, total)
        self._status(path)

    def advance(self, path: str, nbytes: int) -> None:
        if self.cancelled.is_set():
            raise _Cancelled("the client went away; the pull stopped and resumes next time")
        done, total = self._done.get(path, (0, 0))
        self._done[path] = (done + nbytes, total)
        self._status(path)

    def finish_file(self, path: str) -> None:
        _, total = self._done.get(path, (0, 0))
        self._done[path] = (total, total)
        self._status(path)

    def note(self, message: str) -> None:
        self._put({"status": message})


def target_of(model: str) -> str:
    """An Ollama model name as a pull target: ``org/name[:latest]`` or ``org/name:file.gguf``."""
    target = untagged(model)
    if "/" not in target:
        raise RequestError(
            f"pull {model[:200]!r}: r1serve pulls from the Hugging Face hub, so name the repo as "
            "ORG/NAME (e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B) or ORG/NAME:FILE.gguf",
            param="model",
        )
    parse_pull_target(target)  # a malformed id is a 400 before anything starts
    return target


async def pull_lines(model: str, data_dir: Path, options: PullOptions) -> AsyncIterator[Line]:
    """Status lines: manifest, each file's progress, then success (or an error line)."""
    target = parse_pull_target(target_of(model))
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    progress = QueueProgress(loop, queue)
    outcome: list[PullResult | R1ServeError] = []

    def work() -> None:
        try:
            outcome.append(pull(target, data_dir, options, progress))
        except R1ServeError as exc:
            outcome.append(exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    yield {"status": "pulling manifest"}
    worker = threading.Thread(target=work, name="r1serve-api-pull", daemon=True)
    worker.start()
    try:
        while (item := await queue.get()) is not _END:
            assert isinstance(item, dict)
            yield item
    finally:
        progress.cancelled.set()  # no-op after the end; stops a pull whose client left
    result = outcome[0]
    if isinstance(result, R1ServeError):
        yield {"error": result.message}
        return
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    yield {"status": "success", "model": result.name}
