"""From settings to a running engine: find and load the model, plan the KV cache, pick a runner."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from r1serve.catalog.store import lookup
from r1serve.engine.engine import LocalEngine
from r1serve.engine.hf_runner import HFRunner
from r1serve.engine.kv import KVPlan, bytes_per_token, plan_kv
from r1serve.engine.loader import LoadedModel, load_model, resolve_model_source
from r1serve.engine.native import NativeRunner, unsupported_reason
from r1serve.engine.runner import ModelRunner
from r1serve.engine.scheduler import SchedulerConfig
from r1serve.errors import ConfigError
from r1serve.settings import Settings

log = logging.getLogger("r1serve.engine")


@dataclass(frozen=True, slots=True)
class BuiltEngine:
    engine: LocalEngine
    loaded: LoadedModel
    plan: KVPlan
    runner_kind: str


def make_runner(loaded: LoadedModel, settings: Settings) -> tuple[ModelRunner, KVPlan, str]:
    """The runner for this model and the KV plan it was sized by."""
    per_token, formula = bytes_per_token(loaded.config, loaded.dtype)
    plan = plan_kv(
        per_token=per_token,
        formula=formula,
        context_length=loaded.context_length,
        device=loaded.device,
        max_slots=settings.max_num_seqs,
        kv_cache_tokens=settings.kv_cache_tokens,
    )
    reason = unsupported_reason(loaded.model)
    kind = settings.runner
    if kind == "native" and reason is not None:
        raise ConfigError(f"--runner native cannot run this model: {reason}; use --runner hf")
    if kind == "auto":
        kind = "native" if reason is None else "hf"
        if reason is not None:
            log.warning("generic runner (no batching speed-up): %s", reason)
    runner: ModelRunner
    if kind == "native":
        runner = NativeRunner(
            loaded.model,
            max_slots=plan.max_slots,
            max_seq_len=plan.max_seq_len,
            derivation=plan.derivation,
            prefix_caching=settings.prefix_caching,
        )
    else:
        runner = HFRunner(
            loaded.model,
            max_slots=plan.max_slots,
            max_seq_len=plan.max_seq_len,
            derivation=plan.derivation,
        )
    return runner, plan, kind


def build_engine(
    settings: Settings,
    *,
    store_lookup: Callable[[str], Path | None] | None = None,
) -> BuiltEngine:
    """Load the configured model and wrap it in a LocalEngine (not started yet)."""
    if store_lookup is None:
        data_dir = settings.data_dir
        store_lookup = lambda name: lookup(name, data_dir)  # noqa: E731
    source = resolve_model_source(settings.model, store_lookup=store_lookup)
    loaded = load_model(
        source,
        dtype=settings.dtype,
        device=settings.device,
        max_model_len=settings.max_model_len,
        chat_template_path=settings.chat_template,
        threads=settings.threads,
        cache_dir=(settings.cache_dir or settings.data_dir / "cache") / "gguf",
    )
    runner, plan, kind = make_runner(loaded, settings)
    on_gpu = loaded.device.type == "cuda"
    defaults = loaded.sampling_defaults
    engine = LocalEngine(
        runner=runner,
        tokenizer=loaded.tokenizer,
        chat=loaded.chat_formatter(),
        model_name=settings.served_model_name or source.name,
        context_length=loaded.context_length,
        eos_token_ids=loaded.eos_token_ids,
        scheduler_config=SchedulerConfig(
            max_waiting=settings.max_waiting
            if settings.max_waiting is not None
            else 4 * plan.max_slots,
            max_prefill_tokens=settings.max_prefill_tokens or (4096 if on_gpu else 256),
        ),
        default_sampling={
            k: v
            for k, v in {
                "temperature": defaults.temperature,
                "top_p": defaults.top_p,
                "top_k": defaults.top_k,
                "repetition_penalty": defaults.repetition_penalty,
            }.items()
            if v is not None
        },
    )
    return BuiltEngine(engine, loaded, plan, kind)
