"""The transformers backend from settings: load the model, plan the KV cache, pick a runner."""

from __future__ import annotations

import logging

from r1serve.engine.built import BuiltEngine
from r1serve.engine.grammar import ConstraintCompiler, hf_lltokenizer
from r1serve.engine.kv import KVPlan, bytes_per_token, plan_kv
from r1serve.engine.source import ModelSource
from r1serve.engine.transformers.engine import LocalEngine
from r1serve.engine.transformers.hf_runner import HFRunner
from r1serve.engine.transformers.loader import LoadedModel, load_model
from r1serve.engine.transformers.native import NativeRunner, unsupported_reason
from r1serve.engine.transformers.runner import ModelRunner
from r1serve.engine.transformers.scheduler import SchedulerConfig
from r1serve.errors import ConfigError
from r1serve.settings import Settings

log = logging.getLogger("r1serve.engine")


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


def build_transformers(settings: Settings, source: ModelSource) -> BuiltEngine:
    """Load ``source`` with transformers and wrap it in a LocalEngine (not started yet)."""
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
    engine = local_engine(loaded, runner, plan, settings)
    summary = (
        f"model {engine.model_name} from {loaded.source.file} ({loaded.dtype}, "
        f"{loaded.device}, context {loaded.context_length}, loaded in {loaded.load_seconds:.1f} s)",
        f"runner: {kind}; {plan.derivation}",
    )
    return BuiltEngine(engine, source, summary)


def local_engine(
    loaded: LoadedModel, runner: ModelRunner, plan: KVPlan, settings: Settings
) -> LocalEngine:
    on_gpu = loaded.device.type == "cuda"
    defaults = loaded.sampling_defaults
    return LocalEngine(
        runner=runner,
        tokenizer=loaded.tokenizer,
        chat=loaded.chat_formatter(),
        model_name=settings.served_model_name or loaded.source.name,
        context_length=loaded.context_length,
        eos_token_ids=loaded.eos_token_ids,
        constraints=ConstraintCompiler(hf_lltokenizer(loaded.tokenizer, runner.vocab_size)),
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
