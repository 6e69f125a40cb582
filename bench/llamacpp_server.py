"""llama.cpp's own server, in process through the xllamacpp binding, on loopback (a baseline).

The same binding r1serve's llama.cpp engine uses, with llama.cpp's server loop doing
everything: its HTTP routes (OpenAI-compatible), continuous batching over ``--slots``
parallel sequences sharing one KV cache of ``--slots x --ctx-per-slot`` cells.

    python bench/llamacpp_server.py --model X.gguf --port 8002 --slots 16 --threads 2
"""

from __future__ import annotations

import argparse
import signal
import threading

import xllamacpp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.port = args.port
    params.hostnames = ["127.0.0.1"]
    params.n_parallel = args.slots
    params.n_ctx = args.slots * args.ctx_per_slot
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"llama.cpp server on {server.listening_address}", flush=True)
    stop.wait()
    del server  # stops llama.cpp's loop and its listener


if __name__ == "__main__":
    main()
