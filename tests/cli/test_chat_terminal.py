"""`r1serve chat` in a pseudo-terminal: Ctrl+C stops a reply (on the server too) and keeps the
session; at an empty prompt it quits. Piped, stdout holds only the answer."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

import pexpect
import pytest

from r1serve.engine.fake import FakeReply
from support.api import LiveServer, wait_for

Start = Callable[..., LiveServer]
ENDLESS = FakeReply(chunks=[f"w{i} " for i in range(2000)], delay_s=0.02)


# SIG_IGN: started by a process that ignores SIGINT (a script's `cmd &`, and so every test run
# started that way); Python would then never raise KeyboardInterrupt.
@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_ctrl_c_stops_the_reply_on_the_server_and_keeps_the_session(
    live_server: Start, inherited: signal.Handlers
) -> None:
    server = live_server([ENDLESS, "<think>hm</think>second answer"])
    child = pexpect.spawn(
        sys.executable, ["-m", "r1serve", "chat", "--url", server.url],
        encoding="utf-8", timeout=60, dimensions=(40, 120),
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited),
    )  # fmt: skip
    try:
        child.expect("> ")
        child.sendline("hello")
        child.expect("w5 ")
        child.sendintr()  # Ctrl+C mid-reply
        child.expect(r"\(interrupted\)")
        child.expect("> ")
        assert wait_for(lambda: list(server.engine.finished.values()) == ["abort"], timeout=20)
        child.sendline("and now?")
        child.expect("second answer")
        child.expect(r"\(stop\)")
        child.expect("> ")
        assert child.isalive()
        child.sendintr()  # Ctrl+C at an empty prompt quits
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert len(server.engine.fake_runner.decode_batches) < 1500  # stopped long before the end


def test_piped_stdout_has_only_the_answer(live_server: Start) -> None:
    server = live_server(["<think>secret thoughts</think>just the answer"])
    command = [sys.executable, "-m", "r1serve", "chat", "--url", server.url]
    piped = subprocess.run([*command, "q"], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "just the answer\n"
    assert "secret thoughts" in piped.stderr
    shown = subprocess.run(
        [*command, "--show-reasoning", "q"], capture_output=True, text=True, timeout=60
    )
    assert "secret thoughts" in shown.stdout and shown.stdout.endswith("just the answer\n")
    hidden = subprocess.run(
        [*command, "--no-show-reasoning", "q"], capture_output=True, text=True, timeout=60
    )
    assert hidden.stdout == "just the answer\n" and "secret" not in hidden.stderr
