"""All settings, from ``R1SERVE_*`` environment variables; CLI flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    runner: Literal["auto", "native", "hf"] = Field(
        "auto",
        description="native: r1serve's batched decoder (Llama, Qwen2, Qwen3, Mistral); hf: the "
        "model's own forward, one sequence at a time (any architecture); auto: native when "
        "the architecture allows.",
    )
    max_num_seqs: int | None = Field(
        None, gt=0, description="Most sequences decoded together; default from free memory."
    )
    kv_cache_tokens: int | None = Field(
        None, gt=0, description="Total tokens the KV cache holds; default from free memory."
    )
    max_waiting: int | None = Field(
        None,
        ge=0,
        description="Requests that may wait for a slot; more get 503 with Retry-After. "
        "Default: 4 x max_num_seqs.",
    )
    max_prefill_tokens: int | None = Field(
        None,
        gt=0,
        description="Prompt tokens run per scheduler step (chunked prefill), so long prompts "
        "never stall running streams for long. Default: 256 on CPU, 4096 on CUDA.",
    )

    # Storage
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "r1serve",
        description="Where r1serve keeps its database and downloaded models.",
    )

    # HTTP
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above it)."
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a stream waits on a client that stopped reading before it is "
        "dropped and its generation cancelled.",
    )
    request_timeout_s: float | None = Field(
        1800.0,
        gt=0,
        description="Default per-request time limit in seconds (finish_reason 'timeout'); "
        "a request's own `timeout` field can shorten it.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server."
    )
