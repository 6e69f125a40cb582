"""What an upstream engine needs to know, as a plain value (one per served model)."""

from __future__ import annotations

from dataclasses import dataclass

from r1serve.settings import Settings


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream model: its replicas' URLs, its id there, and how to talk to them.

    ``api_key_env`` names the environment variable that holds the key; the key itself is read
    when a request is sent and never stored, logged or shown. ``tokenizer``: ``auto``,
    ``upstream``, ``estimate`` or a local tokenizer path (see ``counting``).
    """

    urls: tuple[str, ...]
    model: str | None = None
    api_key_env: str = "R1SERVE_UPSTREAM_API_KEY"
    connect_timeout_s: float = 5.0
    chunk_timeout_s: float = 120.0
    max_concurrency_per_replica: int = 64
    health_interval_s: float = 5.0
    tokenizer: str = "auto"
    served_name: str | None = None  # the id clients use; default: ``model``
    context_length: int | None = None  # default: the upstream's max_model_len, else 32768

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamConfig:
        return cls(
            urls=tuple(settings.upstream_url),
            model=settings.upstream_model,
            api_key_env=settings.upstream_api_key_env,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            chunk_timeout_s=settings.upstream_chunk_timeout_s,
            max_concurrency_per_replica=settings.upstream_max_concurrency,
            health_interval_s=settings.upstream_health_interval_s,
            tokenizer=settings.upstream_tokenizer,
            served_name=settings.served_model_name,
            context_length=settings.max_model_len,
        )
