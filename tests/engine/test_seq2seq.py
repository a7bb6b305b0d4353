"""Encoder-decoder (T5): every row of a mixed batch gets exactly what PEFT's `PeftModelForSeq2SeqLM` gives it alone."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from peft import PrefixTuningConfig
from transformers import PreTrainedModel

from prompt_store.artifact import load_artifact_dir
from prompt_store.errors import ArtifactMismatch, UnsupportedMethod
from prompt_store.methods import METHODS
from server.engine.engine import Engine, Request
from server.engine.model import wrap_model
from server.engine.sampling import SamplingParams
from server.prompts.build import stored_prefix
from server.prompts.forms import TaskPrompt
from server.prompts.seq2seq_forms import seq2seq_form_name
from tests.engine.join_leave import Row as RunnerRow
from tests.engine.join_leave import assert_join_and_leave, join_and_leave
from tests.factories import VOCAB, load_peft, save_artifact
from tests.seq2seq_factories import SEQ2SEQ_METHODS, make_t5, peft_seq2seq_greedy, peft_seq2seq_scores

MAX_NEW_TOKENS = 8
# Task name -> (PEFT method, virtual tokens): prompts and prefixes of different lengths.
TASKS: dict[str, tuple[str, int]] = {
    "prompt_tuning": ("prompt_tuning", 6),
    "prompt_tuning_long": ("prompt_tuning", 11),
    "p_tuning_mlp": ("p_tuning_mlp", 5),
    "p_tuning_lstm": ("p_tuning_lstm", 4),
    "multitask": ("multitask", 4),
    "prefix": ("prefix", 5),
    "prefix_projection": ("prefix_projection", 9),
}


@dataclass
class T5Zoo:
    base: PreTrainedModel
    folders: dict[str, Path]
    peft_models: dict[str, torch.nn.Module]
    answers: dict[tuple[str | None, tuple[int, ...], int], tuple[list[int], torch.Tensor]] = field(
        default_factory=dict
    )  # PEFT's answers so far: tests that share rows compute them once

    def engine(self) -> tuple[Engine, dict[str, TaskPrompt]]:
        engine = Engine(wrap_model(copy.deepcopy(self.base), torch.device("cpu")))
        prompts = {
            task: engine.build_prompt(load_artifact_dir(f, engine.base.spec)) for task, f in self.folders.items()
        }
        return engine, prompts

    def peft(self, task: str | None) -> torch.nn.Module:
        return self.peft_models[task] if task else self.base

    def answer(self, row: Row) -> tuple[list[int], torch.Tensor]:
        """PEFT's greedy tokens and first logits for the row alone."""
        key = (row.task, tuple(row.input_ids), row.task_index)
        if key not in self.answers:
            model = self.peft(row.task)
            self.answers[key] = peft_seq2seq_greedy(model, row.input_ids, MAX_NEW_TOKENS, task_index=row.peft_index)
        return self.answers[key]


@dataclass(frozen=True)
class Row:
    task: str | None
    input_ids: list[int]
    task_index: int = 0

    @property
    def peft_index(self) -> int | None:
        """PEFT takes `task_ids` for multitask prompts only."""
        return self.task_index if self.task == "multitask" else None


@pytest.fixture(scope="session")
def t5_zoo(tmp_path_factory: pytest.TempPathFactory) -> T5Zoo:
    root = tmp_path_factory.mktemp("t5")
    base = make_t5()
    folders = {
        task: save_artifact(base, SEQ2SEQ_METHODS[method](n), root / task, seed=seed)
        for seed, (task, (method, n)) in enumerate(TASKS.items())
    }
    return T5Zoo(base, folders, {task: load_peft(base, folder) for task, folder in folders.items()})


def close(found: torch.Tensor, expected: torch.Tensor, rel: float) -> bool:
    """Equal within `rel` of the size of the values (the random T5's logits reach ~30)."""
    return bool((found - expected).abs().max() <= rel * expected.abs().max())


# Float32 rounding differs with the matrix shapes, and this deliberately unsmooth random model
# (T5 does not scale attention scores, and its weights are scaled up) amplifies it. Measured by
# `python -m bench.seq2seq_exactness`: a request alone is bit-exact for every method but multitask
# (8e-5: its decoder virtual tokens run in a pass of their own); in a mixed batch up to 1.6e-3,
# where PEFT's own forward on a batch of two identical rows, with no padding at all, differs from
# that row alone by 1e-3. At T5's usual initialisation all of these are below 1e-6.
# A prefix in the wrong slots moves the logits by far more (see the tests below).
ALONE, BATCHED = 2e-4, 4e-3


def mixed_rows(seed: int = 0) -> list[Row]:
    """Every method, some tasks twice, two sub-tasks of one multitask prompt, base-model rows, ragged inputs."""
    generator = torch.Generator().manual_seed(seed)
    tasks: list[tuple[str | None, int]] = [(task, 0) for task in TASKS]
    tasks += [(None, 0), ("prefix", 0), ("multitask", 2), ("prompt_tuning", 0), (None, 0)]
    rows = []
    for i, (task, task_index) in enumerate(tasks):
        length = 1 + (i * 7) % 13
        rows.append(Row(task, torch.randint(3, VOCAB, (length,), generator=generator).tolist(), task_index))
    return rows


def requests(prompts: dict[str, TaskPrompt], rows: list[Row]) -> list[Request]:
    params = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, stop_at_eos=False)
    return [
        Request(r.input_ids, prompt=prompts[r.task] if r.task else None, task_index=r.task_index, params=params)
        for r in rows
    ]


def test_every_row_of_a_mixed_batch_matches_peft_alone(t5_zoo: T5Zoo) -> None:
    engine, prompts = t5_zoo.engine()
    rows = mixed_rows()
    generations = engine.generate(requests(prompts, rows))
    logits = engine.next_token_logits(requests(prompts, rows))
    for i, row in enumerate(rows):
        tokens, first_logits = t5_zoo.answer(row)
        assert generations[i].token_ids == tokens, f"row {i}: {row}"
        assert close(logits[i], first_logits, BATCHED), f"row {i}: {row}"
        assert generations[i].finish_reason == "length"
        alone = engine.next_token_logits(requests(prompts, [row]))[0]
        assert close(alone, first_logits, ALONE), f"row {i} alone: {row}"
    assert len({tuple(g.token_ids) for g in generations}) > len(rows) // 2, "the rows answer differently"


def test_multitask_sub_tasks_differ_and_match_peft(t5_zoo: T5Zoo) -> None:
    engine, prompts = t5_zoo.engine()
    rows = [Row("multitask", [7, 7, 1, 200], t) for t in (0, 1, 2)]
    logits = engine.next_token_logits(requests(prompts, rows))
    for t, row in enumerate(rows):
        assert close(logits[t], t5_zoo.answer(row)[1], BATCHED)
    assert (logits[0] - logits[1]).abs().max() > 1e-2


def test_runtime_forms_are_named_by_where_they_go(t5_zoo: T5Zoo) -> None:
    _, prompts = t5_zoo.engine()
    names = {task: seq2seq_form_name(prompt.prefixes[0]) for task, prompt in prompts.items()}
    for task, prompt in prompts.items():  # what /v1/prompts reports agrees with what was built
        assert METHODS[prompt.peft_type].runtime_form("seq2seq", places_prompt=False) == names[task]
    assert names == {
        "prompt_tuning": "encoder_embeddings",
        "prompt_tuning_long": "encoder_embeddings",
        "p_tuning_mlp": "encoder_embeddings",
        "p_tuning_lstm": "encoder_embeddings",
        "multitask": "encoder_and_decoder_embeddings",
        "prefix": "decoder_prefix_kv",
        "prefix_projection": "decoder_prefix_kv",
    }


def test_each_artifact_changes_the_answer(t5_zoo: T5Zoo) -> None:
    """A server that ignored the prompt, or gave a prefix to the wrong layers, would fail the test above."""
    engine, prompts = t5_zoo.engine()
    input_ids = [3, 14, 15, 92, 65]
    base = engine.next_token_logits([Request(input_ids)])[0]
    for task in TASKS:
        with_task = engine.next_token_logits([Request(input_ids, prompt=prompts[task])])[0]
        assert (with_task - base).abs().max() > 1e-2, task


def test_prefix_slots_wrap_modulo_twice_the_layers(t5_zoo: T5Zoo) -> None:
    """The decoder-only layout (layer l takes slots 2l, 2l+1) is wrong here: PEFT's 4l, 4l+1 mod 2L is right."""
    engine, prompts = t5_zoo.engine()
    artifact = load_artifact_dir(t5_zoo.folders["prefix"], engine.base.spec)
    causal_layout = stored_prefix(artifact, engine.base.spec, engine.base.device, engine.base.dtype)
    wrong = dataclasses.replace(prompts["prefix"], prefixes=(causal_layout,))
    row = Row("prefix", [3, 14, 15, 92, 65])
    expected = t5_zoo.answer(row)[1]
    logits = engine.next_token_logits([Request(row.input_ids, prompt=prompts["prefix"])])[0]
    misplaced = engine.next_token_logits([Request(row.input_ids, prompt=wrong)])[0]
    assert close(logits, expected, ALONE)
    assert not close(misplaced, expected, 10 * BATCHED)


def test_rows_join_and_leave_between_steps(t5_zoo: T5Zoo) -> None:
    """Finished rows leave, new rows (other encoder lengths and prefixes) join; every answer stays exact."""
    engine, prompts = t5_zoo.engine()
    rows = mixed_rows()
    expected = [t5_zoo.answer(row)[0] for row in rows]
    prefill = [RunnerRow(i, r.input_ids, engine.check(r)) for i, r in enumerate(requests(prompts, rows))]
    produced = join_and_leave(engine.runner, prefill, MAX_NEW_TOKENS)
    assert_join_and_leave(produced, expected, "t5")


def test_scores_of_continuations_match_peft(t5_zoo: T5Zoo) -> None:
    """Label scoring (what /v1/classify uses) runs the decoder over each label after the start token."""
    engine, prompts = t5_zoo.engine()
    rows = mixed_rows(seed=5)
    continuations = [[17], [40, 41, 42], [250, 9]]
    scores = engine.score_continuations(requests(prompts, rows), continuations)
    for i, row in enumerate(rows):
        expected = peft_seq2seq_scores(t5_zoo.peft(row.task), row.input_ids, continuations, row.peft_index)
        assert close(scores[i], expected, BATCHED), f"row {i}: {row}"


def test_prefix_artifacts_must_fit_the_decoder(t5_zoo: T5Zoo, tmp_path: Path) -> None:
    engine, _ = t5_zoo.engine()
    spec = engine.base.spec
    wrong_layers = save_artifact(
        make_t5(num_layers=2, num_decoder_layers=2), SEQ2SEQ_METHODS["prefix"](3), tmp_path / "a", 0
    )
    with pytest.raises(ArtifactMismatch, match="num_layers"):
        load_artifact_dir(wrong_layers, spec)
    uneven = make_t5(num_decoder_layers=2)
    uneven_engine = Engine(wrap_model(uneven, torch.device("cpu")))
    folder = save_artifact(uneven, SEQ2SEQ_METHODS["prefix"](3), tmp_path / "b", 0)
    with pytest.raises(UnsupportedMethod, match="decoder"):
        uneven_engine.build_prompt(load_artifact_dir(folder, uneven_engine.base.spec))


def test_heads_times_head_size_other_than_the_model_width(tmp_path: Path) -> None:
    """T5's d_kv is the head size even where heads × d_kv ≠ d_model (as in flan-t5-small)."""
    base = make_t5(d_kv=12, num_layers=2, num_decoder_layers=2)
    configs = {
        "prompt_tuning": SEQ2SEQ_METHODS["prompt_tuning"](4),
        "prefix": PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, token_dim=48),
    }
    folders = {task: save_artifact(base, config, tmp_path / task, seed=1) for task, config in configs.items()}
    zoo = T5Zoo(base, folders, {task: load_peft(base, folder) for task, folder in folders.items()})
    engine, prompts = zoo.engine()
    rows = [Row("prefix", [5, 9, 200, 31]), Row("prompt_tuning", [17, 3]), Row(None, [250, 4, 4, 8, 90])]
    generations = engine.generate(requests(prompts, rows))
    for row, generation in zip(rows, generations, strict=True):
        assert generation.token_ids == zoo.answer(row)[0], row
