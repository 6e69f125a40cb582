"""``python -m support.llamacpp_server --model X.gguf --port P``: llama.cpp's own HTTP server.

The server xllamacpp (the binding r1serve's llama.cpp engine uses) ships: llama.cpp's C++ server
loop and routes (``/v1/chat/completions``, ``/tokenize``, ``/apply-template``, ``/props``,
``/slots``, ``/metrics``, ``/health``), run in this process until SIGTERM. It stands in for a
``llama-server`` binary, so the upstream engine's tests run against the real thing:

    llama-server -m X.gguf --port P --parallel 2 --ctx-size 4096 --reasoning-format auto \
        --slots --metrics

``LlamaCppUpstream`` (``support.upstreams``) starts it as a child process and reads its slots.
"""

from __future__ import annotations

import argparse
import signal
import threading

import xllamacpp

REASONING_FORMATS = {
    "auto": "COMMON_REASONING_FORMAT_AUTO",
    "deepseek": "COMMON_REASONING_FORMAT_DEEPSEEK",
    "none": "COMMON_REASONING_FORMAT_NONE",
}


def server_params(args: argparse.Namespace) -> object:
    """llama-server's flags, as xllamacpp's ``CommonParams``."""
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.alias:
        params.model_alias = {args.alias}  # the id /v1/models lists
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.slots  # --parallel
    params.n_ctx = args.slots * args.ctx_per_slot  # --ctx-size: shared by the slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_threads_http = 4
    params.reasoning_format = getattr(
        xllamacpp.common_reasoning_format, REASONING_FORMATS[args.reasoning_format]
    )
    params.endpoint_slots = True  # --slots: GET /slots, to see a request end
    params.endpoint_metrics = True  # --metrics
    params.warmup = False
    params.ui = False
    if args.api_key:
        params.api_keys = [args.api_key]
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alias", default="")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reasoning-format", choices=sorted(REASONING_FORMATS), default="auto")
    parser.add_argument("--api-key", default="")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = xllamacpp.Server(server_params(args))
    print(f"llama.cpp server on {server.listening_address}", flush=True)
    stop.wait()
    del server  # stops llama.cpp's loop and its listener


if __name__ == "__main__":
    main()
