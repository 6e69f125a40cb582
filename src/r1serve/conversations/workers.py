"""Which server process writes a reply, and whether that process is still alive.

A reply being generated names its writer (``host/pid/start-time``). When a server starts, and
every ``sweep_interval_s`` (15 s) after, replies whose writer is gone are marked incomplete: at
that sweep when the writer was a process on this machine that no longer runs (the ``kill -9``
case), and once its heartbeat is ``lease_s`` (60 s) old when it ran on another machine (replicas
sharing PostgreSQL). ``docs/history.md`` states these delays; a test keeps them in step.
"""

from __future__ import annotations

import os
import socket

import psutil

_TOLERANCE_MS = 1000  # create times read twice may differ by rounding


def _start_ms(pid: int) -> int:
    return int(psutil.Process(pid).create_time() * 1000)


_HOST = socket.gethostname()[:100]


def current_worker() -> str:
    """This process's name as a reply writer."""
    pid = os.getpid()
    return f"{_HOST}/{pid}/{_start_ms(pid)}"


def worker_is_gone(worker: str | None) -> bool:
    """True when ``worker`` is a process of this machine that no longer runs.

    Writers on other machines count as alive; their heartbeat lease decides.
    """
    if worker is None:
        return True
    parts = worker.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return True
    host, pid, started = parts[0], int(parts[1]), int(parts[2])
    if host != _HOST:
        return False
    try:
        return abs(_start_ms(pid) - started) > _TOLERANCE_MS
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False  # cannot tell (no permission): let the lease decide
