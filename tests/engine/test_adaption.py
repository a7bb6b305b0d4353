"""LLaMA-Adapter (ADAPTION_PROMPT) rows share one forward pass with other methods and the base model."""

from __future__ import annotations

import pytest
import torch

from prompt_store.artifact import load_artifact_dir
from prompt_store.errors import UnsupportedMethod
from server.engine.model import model_spec
from server.engine.scheduler import SchedulerConfig
from tests.conftest import TaskRequest, Zoo
from tests.factories import VOCAB, load_peft, make_artifact, make_model, peft_greedy

# Two adapters that adapt different layer sets and lengths, next to a prompt and a prefix.
TASKS = {"adaption_top2": 4, "adaption_all": 7, "prompt_tuning": 6, "prefix": 5}


@pytest.fixture(scope="module", params=["llama", "mistral", "gpt2"])
def adapter_zoo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    arch = request.param
    base = make_model(arch)
    root = tmp_path_factory.mktemp(f"adaption-{arch}")
    folders = {task: make_artifact(base, task, n, root / task, seed=i) for i, (task, n) in enumerate(TASKS.items())}
    return Zoo(arch, base, folders, {task: load_peft(base, folder) for task, folder in folders.items()})


def requests(seed: int, max_new_tokens: int = 6) -> list[TaskRequest]:
    generator = torch.Generator().manual_seed(seed)
    tasks = [*TASKS, None, "adaption_top2", "adaption_all", None, "prefix"]
    return [
        TaskRequest(
            torch.randint(0, VOCAB, (2 + (i * 5) % 11,), generator=generator).tolist(),
            task,
            {"max_new_tokens": max_new_tokens + i % 3, "stop_at_eos": False},
        )
        for i, task in enumerate(tasks)
    ]


def peft_answer(zoo: Zoo, request: TaskRequest) -> tuple[list[int], torch.Tensor]:
    model = zoo.peft_models[request.task] if request.task else zoo.base
    return peft_greedy(model, request.input_ids, request.max_new_tokens)


def test_adapter_rows_match_peft_alone_in_a_mixed_batch(adapter_zoo: Zoo) -> None:
    served = adapter_zoo.engine()
    batch = requests(seed=1)
    generations = served.generate(batch)
    logits = served.next_token_logits(batch)
    for i, request in enumerate(batch):
        tokens, first_logits = peft_answer(adapter_zoo, request)
        label = f"{adapter_zoo.arch} row {i} task={request.task}"
        assert generations[i].token_ids == tokens, label
        assert (logits[i] - first_logits).abs().max() < 1e-4, label


def test_neighbours_do_not_change_an_adapter_row(adapter_zoo: Zoo) -> None:
    """The same adapter request alone, and surrounded by other adapters, prompts and base rows."""
    served = adapter_zoo.engine()
    target = TaskRequest([5, 9, 33, 2, 71], "adaption_top2")
    alone = served.next_token_logits([target])[0]
    for neighbours in ([TaskRequest([8, 8], "adaption_all")], requests(seed=2)):
        together = served.next_token_logits([*neighbours, target])[-1]
        assert (together - alone).abs().max() < 1e-5, adapter_zoo.arch


def test_the_adapter_changes_the_answer(adapter_zoo: Zoo) -> None:
    """A server that dropped the adapter term would fail the parity test: each adapter moves the logits."""
    served = adapter_zoo.engine()
    ids = [3, 14, 15, 92, 65]
    base = served.next_token_logits([TaskRequest(ids)])[0]
    for task in ("adaption_top2", "adaption_all"):
        assert (served.next_token_logits([TaskRequest(ids, task)])[0] - base).abs().max() > 1e-2, task


def test_rows_join_and_leave_a_running_batch_with_adapters(adapter_zoo: Zoo) -> None:
    """At most three rows run at once, so rows with and without adapters join as others finish."""
    served = adapter_zoo.engine()
    batch = requests(seed=3)
    core = served.engine.core(SchedulerConfig(max_batch_size=3))
    ids = [core.add(served.request(r.input_ids, r.task, **r.options)) for r in batch]
    produced: dict[int, list[int]] = {i: [] for i in ids}
    while core.has_work:
        for event in core.step():
            if event.token_id is not None:
                produced[event.request_id].append(event.token_id)
    for request_id, request in zip(ids, batch, strict=True):
        assert produced[request_id] == peft_answer(adapter_zoo, request)[0], f"{adapter_zoo.arch} {request.task}"


def test_adapters_are_refused_for_families_peft_does_not_adapt(tmp_path) -> None:
    llama = make_model("llama")
    folder = make_artifact(llama, "adaption_top2", 4, tmp_path / "adapter", seed=0)
    with pytest.raises(UnsupportedMethod, match="ADAPTION_PROMPT: PEFT supports it for"):
        load_artifact_dir(folder, model_spec(make_model("qwen2").config))
