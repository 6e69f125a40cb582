"""All settings, from ``R1SERVE_*`` environment variables; CLI flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
ReasoningFormat = Literal["split", "raw"]


class Settings(BaseSettings):
    """Server settings. Every field is documented in docs/settings.md (a test checks it)."""

    model_config = SettingsConfigDict(env_prefix="R1SERVE_", extra="ignore")

    # Model
    model: str | None = Field(
        None,
        description="Model to serve: a local HF directory, a .gguf file, a hub repo id already in "
        "the local HF cache, or a name from `r1serve ls`. Empty: the embedded SmolLM2-135M.",
    )
    models_file: Path | None = Field(
        None,
        description="TOML file declaring several served models ([[model]] tables with name, "
        "path, engine and per-model options; docs/models-file.md). --model, when also set, is "
        "served first.",
    )
    serve: list[str] = Field(
        default_factory=list,
        description="More models to serve, each NAME=PATH (PATH: anything --model takes); the "
        "command-line flag --serve repeats, the variable is a JSON list.",
    )
    served_model_name: str | None = Field(
        None, description="Id shown in /v1/models and accepted in requests."
    )
    dtype: Dtype = Field(
        "auto", description="Weight dtype; auto is float32 on CPU and bfloat16 on CUDA."
    )
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto (CUDA when available).")
    chat_template: Path | None = Field(
        None, description="Jinja chat template file that replaces the model's own."
    )
    reasoning_format: ReasoningFormat = Field(
        "split",
        description="split: reasoning goes to reasoning_content; "
        "raw: <think> tags stay in content.",
    )
    max_model_len: int | None = Field(
        None, gt=0, description="Context length to serve; default: the model's own."
    )
    threads: int | None = Field(
        None, gt=0, description="CPU threads for the model; default: all cores."
    )

    # Engine and scheduler
    engine: Literal["auto", "transformers", "llamacpp", "upstream"] = Field(
        "auto",
        description="Backend that runs the model: transformers (HF folders and GGUF, dequantized), "
        "llamacpp (GGUF, quantized, through llama.cpp), upstream (an OpenAI-compatible server "
        "named by upstream_url) or auto (llamacpp for a .gguf file when its binding is "
        "installed, transformers otherwise).",
    )
    runner: Literal["auto", "native", "hf"] = Field(
        "auto",
        description="native: r1serve's batched decoder (Llama, Qwen2, Qwen3, Mistral); hf: the "
        "model's own forward, one sequence at a time (any architecture); auto: native when "
        "the architecture allows.",
    )
    gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="llamacpp engine: model layers offloaded to the GPU (-1: all that fit, 0: "
        "none). Default: all that fit when the llama.cpp build has a GPU, 0 otherwise.",
    )
    kv_cache_dtype: Literal["f16", "q8_0", "q4_0"] = Field(
        "f16",
        description="llamacpp engine: KV cache element type; q8_0 and q4_0 hold about 2x and "
        "3.5x the tokens in the same memory, at a small cost in accuracy.",
    )
    max_num_seqs: int | None = Field(
        None, gt=0, description="Most sequences decoded together; default from free memory."
    )
    kv_cache_tokens: int | None = Field(
        None,
        gt=0,
        description="Total tokens the KV cache holds; default from free memory (the llamacpp "
        "engine on a CPU: at most twice the weights' size, at least 4 x 2048 tokens).",
    )
    max_waiting: int | None = Field(
        None,
        ge=0,
        description="Requests that may wait for a slot; more get 503 with Retry-After. "
        "Default: 4 x max_num_seqs.",
    )
    prefix_caching: bool = Field(
        True,
        description="Reuse the KV cache of a shared prompt prefix (system prompt, earlier turns) "
        "instead of computing it again (native runner).",
    )
    max_prefill_tokens: int | None = Field(
        None,
        gt=0,
        description="Prompt tokens run per scheduler step (chunked prefill), so long prompts "
        "never stall running streams for long; while no stream is decoding a step takes 8 times "
        "this. Default: 256 on CPU, 4096 on CUDA.",
    )

    # Upstream engine (an OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, r1serve)
    upstream_url: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="upstream engine: base URL of the server's OpenAI API (http://gpu:8000/v1); "
        "several (repeat the flag, or a comma list) are replicas of one model.",
    )
    upstream_model: str | None = Field(
        None,
        description="upstream engine: the model's id on the upstream; default: the first one its "
        "/v1/models lists. Served under served_model_name, else this id.",
    )
    upstream_api_key_env: str = Field(
        "R1SERVE_UPSTREAM_API_KEY",
        description="upstream engine: name of the environment variable that holds the upstream's "
        "API key (sent as a Bearer token; never logged). Unset variable: no key.",
    )
    upstream_connect_timeout_s: float = Field(
        5.0, gt=0, description="upstream engine: seconds to connect to a replica."
    )
    upstream_chunk_timeout_s: float = Field(
        120.0,
        gt=0,
        description="upstream engine: seconds to wait for the response and between two streamed "
        "chunks before the reply fails with 504.",
    )
    upstream_max_concurrency: int = Field(
        64,
        gt=0,
        description="upstream engine: requests in flight per replica; with every replica full or "
        "down, requests get 503 with Retry-After.",
    )
    upstream_health_interval_s: float = Field(
        5.0,
        gt=0,
        description="upstream engine: seconds between health checks (GET /models) of each "
        "replica; a failing one is ejected, and re-admitted once a check passes.",
    )
    upstream_tokenizer: str = Field(
        "auto",
        description="upstream engine: how prompts are counted for context fitting and quotas: "
        "upstream (its /tokenize, as vLLM, SGLang and llama.cpp have), estimate (characters / 4), "
        "a local tokenizer folder or tokenizer.json, or auto (upstream when it answers "
        "/tokenize, else estimate).",
    )

    # Storage
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "r1serve",
        description="Where r1serve keeps its database and downloaded models.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database, e.g. postgresql+psycopg://user@host/r1serve "
        "for several replicas sharing one database. Empty: the SQLite file r1serve.db in data_dir.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (redis://host:6379/0) shared by several r1serve replicas: live "
        "reply events for reattaching on another replica, and Stop reaching the replica that "
        "generates. Empty: one server, everything in this process.",
    )
    redis_key_prefix: str = Field(
        "r1serve:",
        min_length=1,
        max_length=100,
        description="Prefix of every Redis key and channel r1serve uses, so that several "
        "deployments (or test runs) can share one Redis.",
    )
    database_busy_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a write waits for a busy SQLite database before it fails.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where converted model files are cached (GGUF weights as safetensors); "
        "default: a cache folder in the data directory.",
    )

    # Accounts
    auth: bool = Field(
        True,
        description="Require a login or an API key on every route but /health. Off (--no-auth) "
        "is single-user local mode and is refused unless the server binds a loopback address.",
    )
    admin_password: SecretStr | None = Field(
        None,
        description="Password of the admin account created on first start; empty: a generated "
        "one, printed once.",
    )
    session_ttl_s: int = Field(
        7 * 24 * 3600, gt=0, description="How long a web login lasts, in seconds."
    )
    login_max_failures_per_account: int = Field(
        10,
        gt=0,
        description="Failed logins for one user name from one client address within "
        "login_window_s before that address's logins for the name get 429 (so a stranger "
        "elsewhere cannot lock the account out).",
    )
    login_max_failures_per_ip: int = Field(
        30,
        gt=0,
        description="Failed logins from one client address within login_window_s before its "
        "logins get 429.",
    )
    login_window_s: int = Field(
        900, gt=0, description="Window, in seconds, over which failed logins are counted."
    )
    default_requests_per_minute: int | None = Field(
        None,
        gt=0,
        description="Requests per minute for users without a quota of their own; empty: no limit.",
    )
    default_tokens_per_day: int | None = Field(
        None,
        gt=0,
        description="Prompt plus completion tokens per UTC day for users without a quota of their "
        "own; empty: no limit.",
    )
    auth_recheck_s: float = Field(
        5.0,
        gt=0,
        description="How often a running stream re-checks its caller's key or session; a revoked "
        "key, ended session or disabled user stops the stream within about this many seconds.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="A token that reads /metrics as 'Authorization: Bearer <token>' (for a "
        "Prometheus scrape job); without it /metrics needs an admin's key or login.",
    )
    usage_flush_interval_s: float = Field(
        0.5,
        gt=0,
        description="How often the background writer stores recorded usage, in seconds.",
    )

    # HTTP
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (with an optional :port) the server answers to, against DNS "
        "rebinding; requests naming another Host get 403. Empty: localhost, 127.0.0.1, [::1] "
        "and the bound address.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (https://app.example) allowed to call the API from a browser; "
        "empty: CORS off. '*' allows any origin but never with cookies.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above it)."
    )
    max_prompt_chars: int | None = Field(
        None,
        gt=0,
        description="Longest prompt in characters (all messages together) that is rendered and "
        "tokenized; longer ones get 400 at once. Default: 32 x the context length in tokens.",
    )
    prompt_workers: int = Field(
        2,
        gt=0,
        le=64,
        description="Threads that render chat templates and tokenize prompts, off the event "
        "loop; more prompts wait for one (and get 503 once the engine's queue is full).",
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a stream waits on a client that stopped reading before it is "
        "dropped and its generation cancelled (checked every second, or every quarter of "
        "the value if that is shorter).",
    )
    request_timeout_s: float | None = Field(
        1800.0,
        gt=0,
        description="Default per-request time limit in seconds (finish_reason 'timeout'); "
        "a request's own `timeout` field can shorten it.",
    )
    max_reasoning_tokens: int | None = Field(
        None,
        ge=0,
        description="Default thinking budget of R1 replies (reasoning tokens, then the thinking "
        "is ended and the answer follows); a request's max_reasoning_tokens or reasoning_effort "
        "wins. Empty: the model's default, else unbounded.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server."
    )

    @field_validator("upstream_url", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """A comma list (``R1SERVE_UPSTREAM_URL=http://a/v1,http://b/v1``) or repeated flags."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        return [u.strip() for item in items for u in str(item).split(",") if u.strip()]
