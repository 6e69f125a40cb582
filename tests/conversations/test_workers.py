"""Reply writers: this process is alive; dead or reused pids on this host are gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from r1serve.conversations import current_worker, worker_is_gone


def test_this_process_is_alive() -> None:
    assert not worker_is_gone(current_worker())
    assert current_worker().startswith(f"{socket.gethostname()[:100]}/{os.getpid()}/")


def test_a_finished_process_is_gone() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "from r1serve.conversations import current_worker as w; print(w())"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert worker_is_gone(child.stdout.strip())


def test_a_reused_pid_is_gone() -> None:
    host, pid, started = current_worker().rsplit("/", 2)
    assert worker_is_gone(f"{host}/{pid}/{int(started) - 60_000}")


def test_writers_on_other_hosts_are_left_to_the_lease() -> None:
    assert not worker_is_gone("some-other-host.example/1/0")


def test_missing_or_malformed_writers_are_gone() -> None:
    for worker in (None, "", "nonsense", "host/pid/start", "host//1"):
        assert worker_is_gone(worker), worker
