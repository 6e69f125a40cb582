"""``python -m support.fake_server --port P --reply TEXT``: r1serve on the fake engine, no auth.

A real r1serve process (its app, routes and metrics) whose model is a script, so the upstream
engine's tests can run several of them and kill one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import uvicorn

from r1serve.api.app import create_app
from r1serve.api.protocol import HeaderTimeoutProtocol
from r1serve.auth import open_accounts
from r1serve.engine.fake import FakeEngine, FakeReply
from r1serve.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", default="<think>\nHm.\n</think>\n\nHello!")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--repeat", action="store_true")
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        auth=False,
        data_dir=Path(tempfile.mkdtemp(prefix="r1serve-fake-upstream-")),
        port=args.port,
    )
    reply = FakeReply(args.reply, delay_s=args.delay, repeat=args.repeat, eos=not args.repeat)
    engine = FakeEngine(reply, model_name=args.model, max_slots=16)
    app = create_app(settings, engine, open_accounts(settings))
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", http=HeaderTimeoutProtocol
    )


if __name__ == "__main__":
    main()
