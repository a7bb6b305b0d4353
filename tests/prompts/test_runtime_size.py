"""The runtime size of every method's form, known from the artifact and the model before it is built.

The registry refuses an upload whose form would pass its limit, so the estimate must never be below
what is built; it is checked here against the forms the engine builds, on each model kind (today the two
are equal for every method).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine
from server.engine.model import wrap_model
from tests.encoder_factories import SEQ_CLS_METHODS, load_classifier, make_seq_cls_artifact, make_tiny_bert
from tests.factories import ADAPTER_METHODS, METHODS, make_artifact, make_model, save_artifact
from tests.seq2seq_factories import SEQ2SEQ_METHODS, make_t5

MakeArtifact = Callable[[PreTrainedModel, str, Path], Path]


def causal(base: PreTrainedModel, method: str, folder: Path) -> Path:
    return make_artifact(base, method, 5, folder, seed=3)


def seq2seq(base: PreTrainedModel, method: str, folder: Path) -> Path:
    return save_artifact(base, SEQ2SEQ_METHODS[method](5), folder, seed=3)


def encoder(base: PreTrainedModel, method: str, folder: Path) -> Path:
    return make_seq_cls_artifact(base, method, 5, folder, seed=3)


def models(tmp: Path) -> dict[str, tuple[PreTrainedModel, PreTrainedModel, MakeArtifact, list[str]]]:
    """kind -> (what PEFT wraps, the model served, how an artifact is made, the methods)."""
    llama, t5 = make_model("llama"), make_t5()
    bert = load_classifier(make_tiny_bert(tmp / "bert"), num_labels=3)
    return {
        "causal": (llama, llama, causal, [*METHODS, *ADAPTER_METHODS]),
        "seq2seq": (t5, t5, seq2seq, list(SEQ2SEQ_METHODS)),
        "encoder": (bert, bert.bert, encoder, list(SEQ_CLS_METHODS)),
    }


@pytest.mark.parametrize("kind", ["causal", "seq2seq", "encoder"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_estimate_is_never_below_the_built_form(kind: str, dtype: torch.dtype, tmp_path: Path) -> None:
    trained_on, served, make, methods = models(tmp_path)[kind]
    engine = Engine(wrap_model(copy.deepcopy(served).to(dtype), torch.device("cpu")))
    spec = engine.base.spec
    for method in methods:
        artifact = load_artifact_dir(make(trained_on, method, tmp_path / method), spec)
        built = engine.build_prompt(artifact).nbytes
        estimate = artifact.runtime_nbytes(spec, dtype_bytes=dtype.itemsize)
        assert built <= estimate <= built * 1.25, (method, built, estimate)
