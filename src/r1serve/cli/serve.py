"""`r1serve serve`: load a model and serve it over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from r1serve.cli import app
from r1serve.cli.common import fail, settings_from
from r1serve.errors import R1ServeError


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(help="HF directory, .gguf file, cached hub id, or a name from `r1serve ls`."),
    ] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Id shown in /v1/models.")] = None,
    models: Annotated[
        Path | None,
        typer.Option(
            "--models", help="TOML file declaring several served models (docs/models-file.md)."
        ),
    ] = None,
    serve: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=PATH", help="Also serve NAME=PATH (repeatable); PATH as for --model."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000].")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16 or float16 [default: auto].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    chat_template: Annotated[
        Path | None, typer.Option(help="Jinja chat template file that replaces the model's.")
    ] = None,
    reasoning_format: Annotated[
        str | None, typer.Option(help="split (reasoning_content) or raw (<think> in content).")
    ] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length to serve.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model.")] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="auto, transformers, llamacpp or upstream [default: auto]."),
    ] = None,
    upstream_url: Annotated[
        list[str] | None,
        typer.Option(
            help="upstream: the server's OpenAI base URL (http://gpu:8000/v1); repeat (or a "
            "comma list) for replicas."
        ),
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="upstream: model id there [default: the first listed].")
    ] = None,
    upstream_api_key_env: Annotated[
        str | None,
        typer.Option(help="upstream: variable holding its API key [R1SERVE_UPSTREAM_API_KEY]."),
    ] = None,
    upstream_tokenizer: Annotated[
        str | None,
        typer.Option(help="upstream: auto, upstream, estimate or a local tokenizer path."),
    ] = None,
    upstream_max_concurrency: Annotated[
        int | None, typer.Option(help="upstream: requests in flight per replica [default: 64].")
    ] = None,
    upstream_connect_timeout_s: Annotated[
        float | None, typer.Option(help="upstream: seconds to connect [default: 5].")
    ] = None,
    upstream_chunk_timeout_s: Annotated[
        float | None,
        typer.Option(help="upstream: seconds to the response and between chunks [default: 120]."),
    ] = None,
    upstream_health_interval_s: Annotated[
        float | None, typer.Option(help="upstream: seconds between health checks [default: 5].")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of a shared database (postgresql+psycopg://user@host/db) "
            "[default: SQLite in the data directory]."
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            help="Redis shared by replicas (redis://host:6379/0): live replies and Stop "
            "across them [default: none, one server]."
        ),
    ] = None,
    redis_key_prefix: Annotated[
        str | None, typer.Option(help="Prefix of r1serve's Redis keys [default: r1serve:].")
    ] = None,
    runner: Annotated[str | None, typer.Option(help="auto, native or hf.")] = None,
    gpu_layers: Annotated[
        int | None,
        typer.Option(
            help="llamacpp: layers on the GPU (-1 all that fit) [default: all on a GPU build]."
        ),
    ] = None,
    kv_cache_dtype: Annotated[
        str | None, typer.Option(help="llamacpp: KV cache type f16, q8_0 or q4_0 [default: f16].")
    ] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="Most sequences decoded together.")
    ] = None,
    kv_cache_tokens: Annotated[
        int | None, typer.Option(help="Total tokens the KV cache holds.")
    ] = None,
    max_waiting: Annotated[
        int | None, typer.Option(help="Requests that may wait; more get 503.")
    ] = None,
    max_prefill_tokens: Annotated[
        int | None, typer.Option(help="Prompt tokens per scheduler step.")
    ] = None,
    request_timeout_s: Annotated[
        float | None, typer.Option(help="Per-request time limit in seconds.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Single-user local mode without logins; only with a loopback --host.",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Print every setting at start-up, not only changes.")
    ] = False,
) -> None:
    """Serve a model over the OpenAI-compatible API and the chat page.

    Every option can also be set with an R1SERVE_* environment variable (e.g. R1SERVE_PORT).
    """
    from r1serve.api.server import run_server

    flags: dict[str, Any] = {
        k: v
        for k, v in locals().items()
        if v is not None and k not in ("no_auth", "verbose", "models", "serve")
    }
    if models is not None:
        flags["models_file"] = models
    if serve:
        flags["serve"] = serve
    if no_auth:
        flags["auth"] = False
    try:
        settings = settings_from(flags)
        run_server(settings, from_flags=flags, verbose=verbose)
    except (R1ServeError, ValidationError) as exc:
        fail(exc)
