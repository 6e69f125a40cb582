"""The models file (``--models FILE``) and ``--serve NAME=PATH``: which models one server serves.

A TOML file of ``[[model]]`` tables (docs/models-file.md)::

    [[model]]
    name = "r1-7b"
    path = "~/models/DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"
    engine = "llamacpp"
    max_model_len = 8192
    default = true

Server-wide settings are every model's defaults; a model's own options win. Errors name the
file, the line of the ``[[model]]`` table (or of the bad field) and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from r1serve.catalog.store import lookup
from r1serve.engine.models import ServedModel, ServedModels
from r1serve.engine.protocol import Engine
from r1serve.engine.registry import backend_names, build_engine
from r1serve.errors import ConfigError
from r1serve.settings import Settings

UPSTREAM = "upstream"
ENTRY_KEYS = frozenset({"name", "path", "source", "engine", "default"})
# Settings a model may set for itself; the rest (host, auth, database…) are the server's.
REPLY_OPTIONS = ("reasoning_format", "max_reasoning_tokens", "max_prompt_chars")
LOCAL_OPTIONS = (
    "dtype",
    "device",
    "chat_template",
    "max_model_len",
    "threads",
    "runner",
    "gpu_layers",
    "kv_cache_dtype",
    "max_num_seqs",
    "kv_cache_tokens",
    "max_waiting",
    "prefix_caching",
    "max_prefill_tokens",
)
# What an upstream entry is expected to carry; the upstream engine's own config validates it.
UPSTREAM_KEYS = ("urls", "model", "api_key_env")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_HEADER = re.compile(r"^\s*\[\[\s*model\s*\]\]")


def _options_model(names: Sequence[str]) -> type[BaseModel]:
    fields = Settings.model_fields
    spec: dict[str, Any] = {name: (fields[name].annotation, fields[name]) for name in names}
    return create_model("ModelOptions", __config__=ConfigDict(extra="forbid"), **spec)


_LocalOptions = _options_model((*LOCAL_OPTIONS, *REPLY_OPTIONS))
_ReplyOptions = _options_model(REPLY_OPTIONS)


def engine_names() -> list[str]:
    return ["auto", *backend_names(), UPSTREAM]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One declared model, checked but not loaded."""

    name: str
    path: str | None  # None: an upstream model
    engine: str
    options: dict[str, Any] = field(default_factory=dict)  # Settings fields, validated
    upstream: dict[str, Any] = field(default_factory=dict)  # for the upstream engine's config
    default: bool = False
    where: str = ""  # "models.toml line 7 (model 'x')": the start of every error about it


def load_models_file(path: Path) -> list[ModelSpec]:
    """The models a models file declares; ConfigError naming the line and field otherwise."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"models file {path}: cannot read it: {exc}") from exc
    return parse_models_toml(text, str(path), base_dir=path.expanduser().parent)


def parse_models_toml(text: str, origin: str, base_dir: Path | None = None) -> list[ModelSpec]:
    """The ``[[model]]`` entries of ``text``; ``origin`` names the file in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"models file {origin}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"model"})
    if unknown:
        raise ConfigError(
            f"models file {origin}: unknown top-level key {unknown[0]!r}; "
            "declare each model in a [[model]] table"
        )
    entries = document.get("model")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"models file {origin}: no [[model]] table; declare at least one")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    specs: list[ModelSpec] = []
    for index, entry in enumerate(entries):
        start = starts[index] if index < len(starts) else 0
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
        place = _Place(origin, lines, start, end)
        if not isinstance(entry, dict):
            raise ConfigError(f"{place.at()}: [[model]] must be a table")
        specs.append(_spec(entry, place, base_dir))
    _check_names(specs)
    return specs


def parse_serve_flag(text: str) -> ModelSpec:
    """``NAME=PATH`` of a ``--serve`` flag (PATH: anything ``--model`` takes)."""
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ConfigError(f"--serve {text!r}: expected NAME=PATH, e.g. r1=~/models/r1.gguf")
    where = f"--serve {text!r}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: bad model name {name!r}")
    return ModelSpec(name=name, path=path, engine="auto", where=where)


def model_specs(settings: Settings) -> list[ModelSpec]:
    """The models the models file and ``--serve`` flags declare; [] when neither is set."""
    specs: list[ModelSpec] = []
    if settings.models_file is not None:
        specs.extend(load_models_file(settings.models_file))
    specs.extend(parse_serve_flag(flag) for flag in settings.serve)
    _check_names(specs)
    return specs


def settings_for(settings: Settings, spec: ModelSpec) -> Settings:
    """The server's settings with the model's own on top."""
    update: dict[str, Any] = {**spec.options, "served_model_name": spec.name}
    if spec.engine != UPSTREAM:
        update.update(model=spec.path, engine=spec.engine)
    return settings.model_copy(update=update)


UpstreamBuilder = Callable[[Settings, ModelSpec], Engine]


def build_served_models(
    settings: Settings,
    *,
    store_lookup: Callable[[str], Path | None] | None = None,
    build_upstream: UpstreamBuilder | None = None,
) -> ServedModels:
    """Load every declared model (``--model`` first, when set with the others), not started.

    Without a models file or ``--serve`` this is exactly the one model ``--model`` names.
    """
    if store_lookup is None:
        data_dir = settings.data_dir
        store_lookup = lambda name: lookup(name, data_dir)  # noqa: E731
    specs = model_specs(settings)
    served: list[ServedModel] = []
    # Engines own no thread before start: one that fails to load leaves nothing to close.
    if not specs or settings.model is not None:
        built = build_engine(settings, store_lookup=store_lookup)
        served.append(ServedModel(built.engine.model_name, built.engine, settings,
                                  built.source, built.summary))  # fmt: skip
    for spec in specs:
        served.append(_build(settings, spec, store_lookup, build_upstream))
    default = next((spec.name for spec in specs if spec.default), None)
    return ServedModels(served, default=default)


def _build(
    settings: Settings,
    spec: ModelSpec,
    store_lookup: Callable[[str], Path | None],
    build_upstream: UpstreamBuilder | None,
) -> ServedModel:
    own = settings_for(settings, spec)
    if spec.engine == UPSTREAM:
        engine = (build_upstream or _upstream)(own, spec)
        if engine.model_name != spec.name:
            raise ConfigError(
                f"{spec.where}: the upstream engine serves {engine.model_name!r}, not {spec.name!r}"
            )
        return ServedModel(spec.name, engine, own, None, (f"engine: {UPSTREAM}",))
    try:
        built = build_engine(own, store_lookup=store_lookup)
    except ConfigError as exc:
        raise ConfigError(f"{spec.where}: {exc.message}") from exc
    return ServedModel(spec.name, built.engine, own, built.source, built.summary)


def _upstream(settings: Settings, spec: ModelSpec) -> Engine:
    """An upstream engine from the entry's options: ``urls`` (a list or one string), ``model``
    (its id upstream), ``api_key_env`` and the rest of ``UpstreamConfig``; clients call it by
    the entry's name."""
    from r1serve.engine.upstream.build import build_upstream
    from r1serve.engine.upstream.config import UpstreamConfig

    options = dict(spec.upstream)
    known = {f.name for f in fields(UpstreamConfig)} - {"served_name"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"{spec.where}: unknown upstream option {unknown[0]!r}; use " + ", ".join(sorted(known))
        )
    urls = options.get("urls")
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"{spec.where}: urls must be a list of the upstream's .../v1 URLs")
    options["urls"] = tuple(urls)
    try:
        config = UpstreamConfig(**options, served_name=spec.name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.where}: {exc}") from exc
    try:
        return build_upstream(config)
    except ConfigError as exc:
        raise ConfigError(f"{spec.where}: {exc}") from exc


class _Place:
    """Where one ``[[model]]`` table is in its file, for error messages."""

    def __init__(self, origin: str, lines: list[str], start: int, end: int) -> None:
        self.origin, self.lines, self.start, self.end = origin, lines, start, end
        self.name: str | None = None

    def at(self, key: str | None = None) -> str:
        line = self.start
        if key is not None:
            pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
            line = next(
                (i for i in range(self.start, self.end) if pattern.match(self.lines[i])),
                self.start,
            )
        named = f" (model {self.name!r})" if self.name else ""
        field_part = f", field {key!r}" if key else ""
        return f"models file {self.origin} line {line + 1}{named}{field_part}"


def _spec(entry: dict[str, Any], place: _Place, base_dir: Path | None) -> ModelSpec:
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problem = "is missing" if name is None else f"{name!r} is not a model name"
        raise ConfigError(f"{place.at('name' if name is not None else None)}: name {problem}")
    place.name = name
    engine = entry.get("engine", "auto")
    if engine not in engine_names():
        raise ConfigError(
            f"{place.at('engine')}: unknown engine {engine!r}; use one of "
            + ", ".join(engine_names())
        )
    default = entry.get("default", False)
    if not isinstance(default, bool):
        raise ConfigError(f"{place.at('default')}: default must be true or false")
    if "path" in entry and "source" in entry:
        raise ConfigError(f"{place.at('source')}: give path or source, not both")
    path = entry.get("path", entry.get("source"))
    key = "path" if "path" in entry else "source"
    rest = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
    if engine == UPSTREAM:
        if path is not None:
            raise ConfigError(f"{place.at(key)}: an upstream model has urls, not a {key}")
        reply = {k: v for k, v in rest.items() if k in REPLY_OPTIONS}
        local = sorted(set(rest) & set(LOCAL_OPTIONS))
        if local:
            raise ConfigError(f"{place.at(local[0])}: {local[0]} applies to local engines only")
        upstream = {k: v for k, v in rest.items() if k not in REPLY_OPTIONS}
        options = _validated(_ReplyOptions, reply, place)
        return ModelSpec(name, None, engine, options, upstream, default, place.at())
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{place.at(key if key in entry else None)}: path is missing")
    stray = sorted(set(rest) & set(UPSTREAM_KEYS))
    if stray:
        raise ConfigError(f"{place.at(stray[0])}: {stray[0]} applies to engine = 'upstream' only")
    options = _validated(_LocalOptions, rest, place)
    if "chat_template" in options:  # a template file, like the model, may sit beside the file
        options["chat_template"] = Path(_near(str(options["chat_template"]), base_dir))
    return ModelSpec(name, _near(path, base_dir), engine, options, {}, default, place.at())


def _validated(model: type[BaseModel], values: dict[str, Any], place: _Place) -> dict[str, Any]:
    try:
        checked = model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else None
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"{place.at(key)}: unknown option; known: {known}") from None
        raise ConfigError(f"{place.at(key)}: {error['msg']}") from None
    return checked.model_dump(exclude_unset=True)


def _near(path: str, base_dir: Path | None) -> str:
    """A relative path is relative to the models file when something is there."""
    candidate = Path(path).expanduser()
    if base_dir is not None and not candidate.is_absolute() and (base_dir / candidate).exists():
        return str(base_dir / candidate)
    return str(candidate) if path.startswith("~") else path


def _check_names(specs: Sequence[ModelSpec]) -> None:
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(
                f"{spec.where}: model name {spec.name!r} is already declared at "
                f"{seen[spec.name].where}"
            )
        seen[spec.name] = spec
    defaults = [spec for spec in specs if spec.default]
    if len(defaults) > 1:
        raise ConfigError(f"{defaults[1].where}: only one model can be the default")
