"""The models file and ``--serve``: what they declare, and errors that name the line and field."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from r1serve.engine.fake import FakeEngine
from r1serve.engine.models import ServedModel, ServedModels
from r1serve.engine.models_file import (
    ModelSpec,
    build_served_models,
    load_models_file,
    model_specs,
    parse_models_toml,
    parse_serve_flag,
    settings_for,
)
from r1serve.errors import ConfigError, NotFoundError
from r1serve.settings import Settings
from support.api import make_settings
from support.models import TINY_R1_GGUF, TINY_R1_HF

GOOD = """\
# two local models and one upstream
[[model]]
name = "r1-hf"
path = "hf"
engine = "transformers"
max_model_len = 256
max_num_seqs = 2
chat_template = "../templates/qwen2.5-tools.jinja"

[[model]]
name = "r1-gguf"
path = "tiny-r1.gguf"
engine = "llamacpp"
default = true
kv_cache_dtype = "q8_0"
reasoning_format = "raw"

[[model]]
name = "fleet"
engine = "upstream"
urls = ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]
model = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
api_key_env = "FLEET_KEY"
"""


TWO = '[[model]]\nname = "a"\npath = "x"\n\n[[model]]\nname = "b"\npath = "y"\n'


def run_in_thread(work: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` off this thread: a browser test earlier in the session leaves a loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


def parse(text: str) -> list[ModelSpec]:
    return parse_models_toml(text, "models.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.message


def test_a_models_file_declares_local_and_upstream_models(tmp_path: Path) -> None:
    file = TINY_R1_HF.parent / "models.toml"  # paths are relative to the file
    specs = parse_models_toml(GOOD, str(file), base_dir=TINY_R1_HF.parent)
    hf, gguf, fleet = specs
    assert (hf.name, hf.engine, hf.path) == ("r1-hf", "transformers", str(TINY_R1_HF))
    template = TINY_R1_HF.parent / "../templates/qwen2.5-tools.jinja"
    assert hf.options == {"max_model_len": 256, "max_num_seqs": 2, "chat_template": template}
    assert not hf.default
    assert gguf.path == str(TINY_R1_GGUF) and gguf.default
    assert gguf.options == {"kv_cache_dtype": "q8_0", "reasoning_format": "raw"}
    assert (fleet.engine, fleet.path) == ("upstream", None)
    assert fleet.upstream == {
        "urls": ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"],
        "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "api_key_env": "FLEET_KEY",
    }
    own = settings_for(make_settings(max_num_seqs=8, threads=1), hf)
    assert (own.model, own.served_model_name, own.engine) == (hf.path, "r1-hf", "transformers")
    assert own.max_num_seqs == 2 and own.threads == 1  # its own option wins; the rest is shared


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[model]]\nname = "a"\npath = \n', "not valid TOML"),
        (
            TWO + 'max_model_len = "big"\n',
            "line 8 (model 'b'), field 'max_model_len': Input should be a valid integer",
        ),
        (
            '[[model]]\nname = "a"\npath = "x"\nmax_model_lenn = 5\n',
            "line 4 (model 'a'), field 'max_model_lenn': unknown option",
        ),
        (
            '[[model]]\nname = "a"\npath = "x"\nengine = "vllm"\n',
            "line 4 (model 'a'), field 'engine': unknown engine 'vllm'; use one of auto,",
        ),
        ('[[model]]\nname = "a"\n', "line 1 (model 'a'): path is missing"),
        ('[[model]]\npath = "x"\n', "line 1: name is missing"),
        (
            '[[model]]\nname = "a"\nengine = "upstream"\npath = "x"\n',
            "field 'path': an upstream model has urls",
        ),
        (
            '[[model]]\nname = "a"\npath = "x"\nurls = ["http://h"]\n',
            "field 'urls': urls applies to engine = 'upstream' only",
        ),
        (
            '[[model]]\nname = "a"\nengine = "upstream"\nmax_num_seqs = 2\n',
            "field 'max_num_seqs': max_num_seqs applies to local engines only",
        ),
        ("models = []\n", "unknown top-level key 'models'"),
        ("", "no [[model]] table"),
    ],
)
def test_a_bad_file_names_the_line_and_field(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith("models file models.toml"), message
    assert expected in message, message


def test_toml_syntax_errors_carry_the_line() -> None:
    assert "line 3" in error_of('[[model]]\nname = "a"\npath = \n')


def test_duplicate_names_and_two_defaults_are_refused() -> None:
    twice = '[[model]]\nname = "a"\npath = "x"\n\n[[model]]\nname = "a"\npath = "y"\n'
    message = error_of(twice)
    assert "line 5 (model 'a')" in message and "already declared at" in message
    assert "line 1" in message
    defaults = TWO.replace("\n\n", "\ndefault = true\n") + "default = true\n"
    assert "only one model can be the default" in error_of(defaults)


def test_serve_flags_are_name_equals_path() -> None:
    spec = parse_serve_flag("r1=/models/r1.gguf")
    assert (spec.name, spec.path, spec.engine) == ("r1", "/models/r1.gguf", "auto")
    for bad in ("r1", "=x", "r1=", "bad name=x"):
        with pytest.raises(ConfigError, match="--serve"):
            parse_serve_flag(bad)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_models_file(tmp_path / "nope.toml")


def test_served_models_route_names_and_close_every_engine() -> None:
    alpha, beta = FakeEngine("a", model_name="alpha"), FakeEngine("b", model_name="beta")
    models = ServedModels([ServedModel("alpha", alpha), ServedModel("beta", beta)], "beta")
    assert models.names == ["beta", "alpha"]  # the default first
    assert models.get().engine is beta and models.get("alpha").engine is alpha
    with pytest.raises(NotFoundError, match="serves 'beta', 'alpha'"):
        models.get("gamma")
    with pytest.raises(ConfigError, match="declared twice"):
        ServedModels([ServedModel("alpha", alpha), ServedModel("alpha", beta)])

    async def run() -> None:
        await models.start()
        assert alpha._started and beta._started  # each engine's model thread runs
        await models.close()

    run_in_thread(run())
    assert not alpha._started and not beta._started


class _Broken(FakeEngine):
    async def start(self) -> None:
        raise RuntimeError("no memory left")


def test_one_engine_failing_to_start_closes_those_started() -> None:
    alpha = FakeEngine("a", model_name="alpha")
    models = ServedModels(
        [ServedModel("alpha", alpha), ServedModel("broken", _Broken("b", model_name="broken"))]
    )
    with pytest.raises(RuntimeError, match="no memory left"):
        run_in_thread(models.start())
    assert not alpha._started


def test_a_models_file_loads_tiny_r1_on_two_engines(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text(
        f'[[model]]\nname = "hf"\npath = "{TINY_R1_HF}"\nengine = "transformers"\n'
        "max_model_len = 128\nmax_num_seqs = 1\n\n"
        f'[[model]]\nname = "gguf"\npath = "{TINY_R1_GGUF}"\nengine = "llamacpp"\n'
        "max_model_len = 96\nmax_num_seqs = 1\ndefault = true\n",
        encoding="utf-8",
    )
    models = build_served_models(make_settings(models_file=file, threads=1))
    assert models.names == ["gguf", "hf"]
    kinds = {m.name: (m.engine.kind, m.engine.context_length) for m in models}
    assert kinds == {"gguf": ("llamacpp", 96), "hf": ("transformers", 128)}
    assert models.get("hf").source is not None


def test_an_upstream_entry_goes_to_the_upstream_builder(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text(
        '[[model]]\nname = "fleet"\nengine = "upstream"\nurls = ["http://h:1/v1"]\n'
        'model = "m"\napi_key_env = "K"\nmax_reasoning_tokens = 64\n',
        encoding="utf-8",
    )
    seen: list[ModelSpec] = []

    def build(settings: Settings, spec: ModelSpec) -> FakeEngine:
        seen.append(spec)
        assert settings.max_reasoning_tokens == 64
        return FakeEngine("up", model_name=spec.name)

    models = build_served_models(make_settings(models_file=file), build_upstream=build)
    assert models.names == ["fleet"] and models.get().summary == ("engine: upstream",)
    assert seen[0].upstream == {"urls": ["http://h:1/v1"], "model": "m", "api_key_env": "K"}

    def wrong_name(settings: Settings, spec: ModelSpec) -> FakeEngine:
        return FakeEngine("up", model_name="m")

    with pytest.raises(ConfigError, match="serves 'm', not 'fleet'"):
        build_served_models(make_settings(models_file=file), build_upstream=wrong_name)


def test_model_and_serve_flags_serve_side_by_side_with_shared_options() -> None:
    settings = make_settings(
        model=str(TINY_R1_GGUF),
        serve=[f"second={TINY_R1_HF}"],
        max_model_len=112,
        max_num_seqs=1,
        threads=1,
    )
    models = build_served_models(settings)
    assert models.default == "tiny-r1" and models.names == ["tiny-r1", "second"]
    assert [m.engine.kind for m in models] == ["llamacpp", "transformers"]
    assert {m.engine.context_length for m in models} == {112}
    with pytest.raises(ConfigError, match="'second' is already declared"):
        model_specs(make_settings(serve=["second=a", "second=b"]))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('urls = ["http://h:1/v1"]\nretries = 3\n', "unknown upstream option 'retries'"),
        ("urls = []\n", "urls must be a list"),
        ('urls = ["ftp://h/v1"]\n', "must start with http:// or https://"),
    ],
)
def test_a_bad_upstream_entry_is_named(tmp_path: Path, lines: str, message: str) -> None:
    file = tmp_path / "models.toml"
    file.write_text(
        f'[[model]]\nname = "fleet"\nengine = "upstream"\nmodel = "m"\n{lines}', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=message):
        build_served_models(make_settings(models_file=file))
