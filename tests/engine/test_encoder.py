"""Encoder classifiers: rows of many SEQ_CLS tasks (different methods, different label counts) in one
forward pass, each equal to PEFT's `PeftModelForSequenceClassification` on that request alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from prompt_store.artifact import load_artifact_dir
from prompt_store.records import TaskCard
from prompt_store.redis_store import RedisStore
from server.engine.engine import Engine, Request
from server.engine.model import ModelConfig, load_base_model
from server.errors import ContextTooLong, InvalidRequest
from server.prompts.encoder_forms import EncoderPrompt
from server.prompts.registry import PromptRegistry
from tests.encoder_factories import (
    load_classifier,
    load_peft_classifier,
    make_seq_cls_artifact,
    make_tiny_bert,
    minilm_dir,
    peft_logits,
)

# Task -> (PEFT method, virtual tokens, labels): prompt-style and prefix rows, 2 and 3 labels.
TASKS = {
    "pt2": ("prompt_tuning", 5, 2),
    "prefix3": ("prefix", 4, 3),
    "ptuning3": ("p_tuning", 3, 3),
    "v2_2": ("p_tuning_v2", 6, 2),
    "mpt3": ("multitask", 4, 3),
}
TEXTS = ["I loved this film", "awful, never again", "the plot was fine but the ending dragged on forever", "ok"]


@dataclass
class EncoderZoo:
    engine: Engine
    tokenizer: object
    prompts: dict[str, EncoderPrompt]
    peft_models: dict[str, PeftModel]
    model_dir: Path
    folders: dict[str, Path]

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])


@pytest.fixture(scope="module", params=["tiny_bert", "minilm"])
def zoo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EncoderZoo:
    root = tmp_path_factory.mktemp(request.param)
    model_dir = make_tiny_bert(root / "model") if request.param == "tiny_bert" else minilm_dir()
    classifiers = {labels: load_classifier(model_dir, labels) for labels in (2, 3)}
    engine = Engine(load_base_model(ModelConfig(str(model_dir), device="cpu", dtype="float32")))
    prompts, peft_models, folders = {}, {}, {}
    for seed, (task, (method, n, labels)) in enumerate(TASKS.items()):
        folder = folders[task] = make_seq_cls_artifact(classifiers[labels], method, n, root / task, seed=seed + 1)
        prompt = engine.build_prompt(load_artifact_dir(folder, engine.base.spec))
        assert isinstance(prompt, EncoderPrompt) and prompt.head.num_labels == labels
        prompts[task] = prompt
        peft_models[task] = load_peft_classifier(classifiers[labels], folder)
    return EncoderZoo(engine, AutoTokenizer.from_pretrained(model_dir), prompts, peft_models, model_dir, folders)


def test_mixed_batch_rows_equal_peft_alone(zoo: EncoderZoo) -> None:
    rows = [
        ("pt2", TEXTS[0], 0), ("prefix3", TEXTS[1], 0), ("ptuning3", TEXTS[2], 0), ("v2_2", TEXTS[3], 0),
        ("mpt3", TEXTS[0], 1), ("prefix3", TEXTS[2], 0), ("pt2", TEXTS[3], 0), ("mpt3", TEXTS[1], 0),
    ]  # fmt: skip
    requests = [Request(zoo.ids(text), zoo.prompts[task], index) for task, text, index in rows]
    logits = zoo.engine.classify(requests)
    for (task, text, index), served in zip(rows, logits, strict=True):
        mpt_index = index if TASKS[task][0] == "multitask" else None
        expected = peft_logits(zoo.peft_models[task], zoo.ids(text), mpt_index)
        assert served.shape == (TASKS[task][2],)
        assert torch.allclose(torch.softmax(served, -1), torch.softmax(expected, -1), atol=1e-5, rtol=0), task
        assert torch.allclose(served, expected, atol=1e-4, rtol=0), task


def test_each_task_changes_the_answer(zoo: EncoderZoo) -> None:
    """The prompt matters: the same head with another task's prompt (or none) scores differently."""
    ids = zoo.ids(TEXTS[2])
    pt2 = zoo.prompts["pt2"]
    served = zoo.engine.classify([Request(ids, pt2)])[0]
    pooled = zoo.engine.kind.classifier.pooled([Request(ids, None)])[0]
    without_prompt = torch.nn.functional.linear(pooled, pt2.head.weight, pt2.head.bias)
    assert (served - without_prompt).abs().max() > 1e-3


def test_base_rows_beside_task_rows_equal_the_encoder_alone(zoo: EncoderZoo) -> None:
    requests = [
        Request(zoo.ids(TEXTS[0]), None), Request(zoo.ids(TEXTS[2]), zoo.prompts["prefix3"]),
        Request(zoo.ids(TEXTS[1]), zoo.prompts["pt2"]), Request(zoo.ids(TEXTS[3]), None),
    ]  # fmt: skip
    pooled = zoo.engine.kind.classifier.pooled(requests)
    alone = AutoModel.from_pretrained(zoo.model_dir).eval()
    for row in (0, 3):
        with torch.no_grad():
            expected = alone(input_ids=torch.tensor([requests[row].input_ids])).pooler_output[0]
        assert torch.allclose(pooled[row], expected, atol=1e-5, rtol=0)


def test_encoder_refuses_generation_base_rows_and_overlong_inputs(zoo: EncoderZoo) -> None:
    engine, ids = zoo.engine, zoo.ids(TEXTS[0])
    with pytest.raises(InvalidRequest, match="does not generate"):
        engine.generate([Request(ids, zoo.prompts["pt2"])])
    with pytest.raises(InvalidRequest, match="name a task"):
        engine.classify([Request(ids, zoo.prompts["pt2"]), Request(ids, None)])
    with pytest.raises(InvalidRequest, match="task_index"):
        engine.classify([Request(ids, zoo.prompts["mpt3"], task_index=2)])
    too_long = ids * engine.base.spec.max_positions
    with pytest.raises(ContextTooLong):
        engine.classify([Request(too_long, zoo.prompts["pt2"])])


def test_peft_prefix_tuning_forward_fails_on_bert(zoo: EncoderZoo) -> None:
    """Why the reference runs PEFT's prefix lines by hand: PEFT's own forward refuses BERT here."""
    ids = torch.tensor([zoo.ids(TEXTS[0])])
    with pytest.raises(ValueError, match="does not support past key values"):
        zoo.peft_models["prefix3"](input_ids=ids, attention_mask=torch.ones_like(ids))


def test_a_checkpoint_without_pooler_weights_is_refused(tmp_path: Path) -> None:
    """PEFT saves the head but not the pooler; a random pooler at load would not be the trained one."""
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no pooler weights"):
        load_base_model(ModelConfig(str(tmp_path), device="cpu", dtype="float32"))


@pytest.mark.anyio
async def test_a_replica_rebuilds_the_task_and_its_head_from_redis(zoo: EncoderZoo, redis_url: str) -> None:
    """Replica A uploads through Redis; replica B has never seen the task, reads it back and answers alike."""
    prefix = f"encoder-{uuid.uuid4().hex}:"
    spec = zoo.engine.base.spec
    stores = [RedisStore.from_url(redis_url, prefix=prefix) for _ in range(2)]
    a, b = (PromptRegistry(store, spec, zoo.engine.build_prompt, 1 << 30) for store in stores)
    folder = zoo.folders["prefix3"]
    card = TaskCard(labels=["a", "b", "c"]).model_dump_json().encode()
    files = [(folder / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")]
    try:
        await a.upload("topic", *files, card)
        lease = await b.acquire("topic")
        assert isinstance(lease.prompt, EncoderPrompt) and lease.record.card is not None
        served = zoo.engine.classify([Request(zoo.ids(TEXTS[1]), lease.prompt)])[0]
        b.release(lease)
    finally:
        for store in stores:
            await store.close()
    expected = peft_logits(zoo.peft_models["prefix3"], zoo.ids(TEXTS[1]))
    assert torch.allclose(torch.softmax(served, -1), torch.softmax(expected, -1), atol=1e-5, rtol=0)
