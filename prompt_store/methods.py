"""What each PEFT prompt-learning method stores, and which config values it must have.

One small class per `peft_type`, chosen by name from `METHODS`. Shapes follow PEFT 0.13–0.21:
N = num_virtual_tokens, S = num_transformer_submodules, D = hidden size, L = layers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prompt_store.errors import ArtifactError, ArtifactMismatch
from prompt_store.spec import ModelSpec

MAX_VIRTUAL_TOKENS = 4096
MAX_SUB_TASKS = 4096
MAX_RANK = 4096


def require_int(config: dict[str, Any], key: str, low: int, high: int) -> int:
    """The integer `config[key]`, which must lie in [low, high]."""
    value = config.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ArtifactError(f"{key}: expected an integer in [{low}, {high}], found {value!r}")
    return value


def require_equal(field: str, expected: Any, found: Any, hint: str = "") -> None:
    if expected != found:
        raise ArtifactMismatch(field, expected, found, hint)


class PromptMethod:
    """A prompt-learning method: config checks and the tensors its file must hold."""

    peft_type: ClassVar[str]
    task_types: ClassVar[frozenset[str]] = frozenset({"CAUSAL_LM"})
    is_prefix: ClassVar[bool] = False  # the file holds per-layer keys/values, not embeddings

    def check_config(self, config: dict[str, Any], spec: ModelSpec) -> None:
        require_int(config, "num_virtual_tokens", 1, min(MAX_VIRTUAL_TOKENS, spec.max_positions))
        require_int(config, "num_transformer_submodules", 1, 2)
        self.check_dims(config, spec)

    def check_dims(self, config: dict[str, Any], spec: ModelSpec) -> None:
        require_equal("token_dim", spec.hidden_size, config.get("token_dim"), "the model's hidden size")

    def num_rows(self, config: dict[str, Any]) -> int:
        return config["num_virtual_tokens"] * config["num_transformer_submodules"]

    def expected_shapes(self, config: dict[str, Any], spec: ModelSpec) -> dict[str, tuple[int, ...]]:
        return {"prompt_embeddings": (self.num_rows(config), spec.hidden_size)}

    def num_tasks(self, config: dict[str, Any]) -> int:
        return 1


class PromptTuning(PromptMethod):
    peft_type = "PROMPT_TUNING"


class PTuning(PromptMethod):
    """The MLP/LSTM encoder ran at save time; only its output is stored."""

    peft_type = "P_TUNING"


class Cpt(PromptMethod):
    """Context examples' embeddings plus projected deltas, baked in at save time."""

    peft_type = "CPT"

    def check_dims(self, config: dict[str, Any], spec: ModelSpec) -> None:
        super().check_dims(config, spec)
        token_ids = config.get("cpt_token_ids")
        if not isinstance(token_ids, list):
            raise ArtifactError(f"cpt_token_ids: expected a list of token ids, found {token_ids!r}")
        outside = [t for t in token_ids if type(t) is not int or not 0 <= t < spec.vocab_size]
        if outside:
            raise ArtifactMismatch("cpt_token_ids", f"ids in [0, {spec.vocab_size})", outside[:8], "the model's vocab")
        require_equal("num_virtual_tokens", len(token_ids), config["num_virtual_tokens"], "len(cpt_token_ids)")

    def num_rows(self, config: dict[str, Any]) -> int:
        return config["num_virtual_tokens"]


class MultitaskPromptTuning(PromptMethod):
    """A shared prompt modulated per sub-task by a rank-r product: shared ⊙ (cols[t] @ rows[t])."""

    peft_type = "MULTITASK_PROMPT_TUNING"

    def check_dims(self, config: dict[str, Any], spec: ModelSpec) -> None:
        super().check_dims(config, spec)
        require_int(config, "num_tasks", 1, MAX_SUB_TASKS)
        require_int(config, "num_ranks", 1, MAX_RANK)

    def expected_shapes(self, config: dict[str, Any], spec: ModelSpec) -> dict[str, tuple[int, ...]]:
        rows, tasks, rank = self.num_rows(config), config["num_tasks"], config["num_ranks"]
        return {
            "prompt_embeddings": (rows, spec.hidden_size),
            "prefix_task_cols": (tasks, rows, rank),
            "prefix_task_rows": (tasks, rank, spec.hidden_size),
        }

    def num_tasks(self, config: dict[str, Any]) -> int:
        return int(config["num_tasks"])


class PrefixTuning(PromptMethod):
    """Final per-layer keys and values; a `prefix_projection` MLP was applied at save time."""

    peft_type = "PREFIX_TUNING"
    is_prefix = True

    def check_dims(self, config: dict[str, Any], spec: ModelSpec) -> None:
        require_equal("num_layers", spec.num_layers, config.get("num_layers"), "the model's layer count")
        require_equal(
            "num_attention_heads",
            spec.num_key_value_heads,
            config.get("num_attention_heads"),
            "the model's key/value heads",
        )
        require_equal("token_dim", spec.kv_dim, config.get("token_dim"), "key/value heads × head_dim")

    def expected_shapes(self, config: dict[str, Any], spec: ModelSpec) -> dict[str, tuple[int, ...]]:
        return {"prompt_embeddings": (config["num_virtual_tokens"], 2 * spec.num_layers * spec.kv_dim)}


class Cartridge(PrefixTuning):
    """A trained KV prefix (Cartridges); stored and served exactly as prefix tuning."""

    peft_type = "CARTRIDGE"


METHODS: dict[str, PromptMethod] = {
    method.peft_type: method()
    for method in (PromptTuning, PTuning, Cpt, MultitaskPromptTuning, PrefixTuning, Cartridge)
}
