"""Start, wait for and stop the servers under test, never leaving one behind.

Each server runs in its own session (process group), so stopping it stops whatever it started,
and Ctrl-C at the terminal reaches only the harness, which then stops the servers itself.
``ServerProcess.stop_all`` runs at exit and on SIGTERM as well.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import ClassVar

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(threads: int) -> dict[str, str]:
    """Environment for every child: this checkout's package, offline, a fixed thread count."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class ServerSpec:
    """How to start one server; ``{port}`` in the command is filled in at start."""

    name: str
    command: list[str]
    ready_path: str = "/v1/models"
    startup_timeout_s: float = 300.0
    extra_body: dict[str, object] = field(default_factory=dict)  # sent with every request
    env: dict[str, str] = field(default_factory=dict)  # on top of child_env()


class ServerProcess:
    """One running server; a context manager that always stops it."""

    running: ClassVar[list[ServerProcess]] = []

    def __init__(self, spec: ServerSpec, *, threads: int, log_dir: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in spec.command]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.name}.log"
        self._threads = threads
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        _install_cleanup()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**child_env(self._threads), **self.spec.env},
                cwd=ROOT,
                start_new_session=True,
            )
        ServerProcess.running.append(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the server and its children."""
        proc = psutil.Process(self.pid)
        return int(
            proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        )

    def exit_note(self) -> str:
        """`` (it exited with ...; log ...)`` if the server has exited or does within half a
        second (a crashed server's status comes a moment after its socket closes), else ``""``."""
        if self.process is None:
            return ""
        try:
            code = self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return ""
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        return f" (the server exited with {how}; log {self.log_path})"

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.process.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.spec.ready_path, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{self.spec.name} did not answer within {self.spec.startup_timeout_s}s")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left."""
        process = self.process
        if process is None:
            return
        if self in ServerProcess.running:
            ServerProcess.running.remove(self)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children the server left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)

    @classmethod
    def stop_all(cls) -> None:
        for server in list(cls.running):
            server.stop(grace_s=5.0)


_installed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    ServerProcess.stop_all()
    sys.exit(128 + signum)


def _install_cleanup() -> None:
    global _installed
    if not _installed:
        atexit.register(ServerProcess.stop_all)
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGHUP, _on_sigterm)
        _installed = True


def r1serve_spec(
    model: Path, threads: int, *extra: str, engine: str = "transformers", name: str = "r1serve"
) -> ServerSpec:
    """``r1serve serve --engine ENGINE`` on the model, on the CPU (float32 for transformers).

    ``--no-auth`` (local mode, loopback only) because the servers it is compared with have no
    accounts; its database goes to a scratch folder, not the user's data directory.
    """
    data_dir = ROOT / "bench" / ".cache" / "r1serve-data"
    dtype = ["--dtype", "float32"] if engine == "transformers" else []
    return ServerSpec(
        name,
        [sys.executable, "-m", "r1serve", "serve", "--model", str(model), "--port", "{port}",
         "--host", "127.0.0.1", "--engine", engine, *dtype, "--device", "cpu",
         "--threads", str(threads), "--log-level", "warning", "--no-auth", *extra],
        extra_body={"ignore_eos": True},
        env={"R1SERVE_DATA_DIR": str(data_dir)},
    )  # fmt: skip


def llamacpp_server_spec(gguf: Path, threads: int, slots: int, ctx_per_slot: int) -> ServerSpec:
    """llama.cpp's own server through xllamacpp (bench/llamacpp_server.py), ``slots`` sequences."""
    return ServerSpec(
        "llamacpp-server",
        [sys.executable, str(ROOT / "bench" / "llamacpp_server.py"), "--model", str(gguf),
         "--port", "{port}", "--slots", str(slots), "--threads", str(threads),
         "--ctx-per-slot", str(ctx_per_slot)],
        extra_body={"ignore_eos": True},  # llama.cpp's server reads it as r1serve does
    )  # fmt: skip


def llamacpp_pair(gguf: Path, threads: int, slots: int) -> list[ServerSpec]:
    """r1serve's llama.cpp engine and llama.cpp's own server on ``gguf``, the same slots of
    2048 tokens each (bench.greedy and bench.thread_cpu compare the two)."""
    return [
        r1serve_spec(gguf, threads, "--max-num-seqs", str(slots), "--max-model-len", "2048",
                     engine="llamacpp", name="r1serve-llamacpp"),
        llamacpp_server_spec(gguf, threads, slots, 2048),
    ]  # fmt: skip


# llama-cpp-python compiles llama.cpp when installed (minutes), so it lives in its own venv and
# never in r1serve's dependencies: see docs/benchmarks.md.
LLAMA_CPP_PYTHON_VENV = ROOT / "bench" / ".cache" / "llama-cpp-python-venv"


def llama_cpp_python_spec(
    gguf: Path, threads: int, eos_token_id: int, ctx_per_slot: int
) -> ServerSpec:
    """``python -m llama_cpp.server`` (one sequence at a time) from its own venv.

    It has no ``ignore_eos``; a -100 logit bias on the EOS token makes every request run to
    ``max_tokens`` just the same. ``--interrupt_requests False``: by default a new request cuts
    the one streaming (its client gets an empty stream), so concurrent clients would fail.
    """
    python = Path(os.environ.get("LLAMA_CPP_PYTHON", LLAMA_CPP_PYTHON_VENV / "bin" / "python"))
    return ServerSpec(
        "llama-cpp-python",
        [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", "{port}", "--n_threads", str(threads), "--n_threads_batch", str(threads),
         "--n_ctx", str(ctx_per_slot), "--interrupt_requests", "False"],
        extra_body={"logit_bias": {str(eos_token_id): -100}},
    )  # fmt: skip


def reference_spec(model: Path, threads: int) -> ServerSpec:
    """The one-thread-per-request baseline (bench/reference_server.py)."""
    return ServerSpec(
        "reference",
        [sys.executable, str(ROOT / "bench" / "reference_server.py"), "--model", str(model),
         "--port", "{port}", "--threads", str(threads)],
        extra_body={"ignore_eos": True},
    )  # fmt: skip


def transformers_spec(model: Path) -> ServerSpec:
    """``transformers serve --continuous-batching`` with its defaults, pinned to the model.

    It refuses unknown fields such as ``ignore_eos`` (422); a per-request generation config
    with EOS disabled (-1, which its continuous batching reads as "none") gives the same
    fixed-length outputs.
    """
    cli = Path(sys.executable).with_name("transformers")
    return ServerSpec(
        "transformers-cb",
        [str(cli), "serve", str(model), "--continuous-batching", "--device", "cpu",
         "--dtype", "float32", "--port", "{port}", "--host", "127.0.0.1"],
        extra_body={"generation_config": '{"eos_token_id": -1}'},
    )  # fmt: skip
