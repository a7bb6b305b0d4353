"""What each PEFT prompt-learning method stores, and which config values it must have.

One small class per `peft_type`, chosen by name from `METHODS`. Shapes follow PEFT 0.13–0.21:
N = num_virtual_tokens, S = num_transformer_submodules, D = hidden size, L = layers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prompt_store.errors import ArtifactError, ArtifactMismatch, UnsupportedMethod
from prompt_store.spec import MODEL_KINDS, ModelSpec

MAX_VIRTUAL_TOKENS = 4096
MAX_SUB_TASKS = 4096
MAX_RANK = 4096
FP32_BYTES = 4  # embeddings stay in float32 on the device, as trained


def require_int(config: dict[str, Any], key: str, low: int, high: int) -> int:
    """The integer `config[key]`, which must lie in [low, high]."""
    value = config.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ArtifactError(f"{key}: expected an integer in [{low}, {high}], found {value!r}")
    return value


def require_equal(field: str, expected: Any, found: Any, hint: str = "") -> None:
    if expected != found:
        raise ArtifactMismatch(field, expected, found, hint)


def require_decoder_rows(config: dict[str, Any], spec: ModelSpec) -> None:
    """On an encoder-decoder, methods that also give the decoder rows need PEFT's two-submodule layout."""
    if spec.is_encoder_decoder:
        require_equal("num_transformer_submodules", 2, config["num_transformer_submodules"], "encoder-decoder")


class PromptMethod:
    """A prompt-learning method: config checks and the tensors its file must hold."""

    peft_type: ClassVar[str]
    kinds: ClassVar[frozenset[str]] = frozenset(MODEL_KINDS)  # the model kinds it can be served on
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

    def num_virtual_tokens(self, config: dict[str, Any]) -> int:
        return int(config["num_virtual_tokens"])

    def runtime_nbytes(self, config: dict[str, Any], spec: ModelSpec, dtype_bytes: int) -> int:
        """Device bytes of the runtime forms (DESIGN.md §2), known from a checked config before any is
        built: every sub-task's embeddings, and on a causal model the keys and values computed from them."""
        per_token = FP32_BYTES * spec.hidden_size
        if spec.kind == "causal":
            per_token += spec.kv_bytes_per_token(dtype_bytes)
        return self.num_tasks(config) * config["num_virtual_tokens"] * per_token

    def runtime_form(self, kind: str, places_prompt: bool) -> str:
        """The device form it is served from (DESIGN.md §2): a prefix of keys/values computed once where
        the virtual tokens come first in a causal model, else the embeddings themselves. On an
        encoder-decoder, prefixes go to the decoder and embeddings before the encoder input."""
        if kind == "seq2seq":
            return "decoder_prefix_kv" if self.is_prefix else "encoder_embeddings"
        if self.is_prefix or (kind == "causal" and not places_prompt):
            return "prefix_kv"
        return "embeddings"


class PromptTuning(PromptMethod):
    peft_type = "PROMPT_TUNING"


class PTuning(PromptMethod):
    """The MLP/LSTM encoder ran at save time; only its output is stored."""

    peft_type = "P_TUNING"


class Cpt(PromptMethod):
    """Context examples' embeddings plus projected deltas, baked in at save time."""

    peft_type = "CPT"
    kinds = frozenset({"causal"})  # PEFT trains CPT for causal language models only

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
        require_decoder_rows(config, spec)
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

    def runtime_nbytes(self, config: dict[str, Any], spec: ModelSpec, dtype_bytes: int) -> int:
        # On an encoder-decoder each sub-task also keeps the decoder's N embeddings.
        return super().runtime_nbytes(config, spec, dtype_bytes) * (2 if spec.is_encoder_decoder else 1)

    def runtime_form(self, kind: str, places_prompt: bool) -> str:
        # On an encoder-decoder PEFT puts the sub-task's second N rows before the decoder's first token.
        form = super().runtime_form(kind, places_prompt)
        return "encoder_and_decoder_embeddings" if form == "encoder_embeddings" else form


class PrefixTuning(PromptMethod):
    """Final per-layer keys and values; a `prefix_projection` MLP was applied at save time."""

    peft_type = "PREFIX_TUNING"
    is_prefix = True

    def check_dims(self, config: dict[str, Any], spec: ModelSpec) -> None:
        require_decoder_rows(config, spec)
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

    def runtime_nbytes(self, config: dict[str, Any], spec: ModelSpec, dtype_bytes: int) -> int:
        return config["num_virtual_tokens"] * spec.kv_bytes_per_token(dtype_bytes)


class Cartridge(PrefixTuning):
    """A trained KV prefix (Cartridges); stored and served exactly as prefix tuning."""

    peft_type = "CARTRIDGE"
    kinds = frozenset({"causal"})


class AdaptionPrompt(PromptMethod):
    """LLaMA-Adapter: A trained prompt tokens and a scalar gate in each of the top `adapter_layers` layers."""

    peft_type = "ADAPTION_PROMPT"
    kinds = frozenset({"causal"})
    # Where PEFT's saved names put each adapted attention module, per model type it supports.
    LAYER_PATHS: ClassVar[dict[str, str]] = {
        "llama": "base_model.model.model.layers.{}.self_attn",
        "mistral": "base_model.model.model.layers.{}.self_attn",
        "gpt2": "base_model.model.transformer.h.{}.attn",
    }

    def check_config(self, config: dict[str, Any], spec: ModelSpec) -> None:
        if spec.model_type not in self.LAYER_PATHS:
            raise UnsupportedMethod(
                f"ADAPTION_PROMPT: PEFT supports it for {sorted(self.LAYER_PATHS)} models; "
                f"the served model is {spec.model_type!r}"
            )
        require_int(config, "adapter_len", 1, MAX_VIRTUAL_TOKENS)
        require_int(config, "adapter_layers", 1, spec.num_layers)

    def adapted_layers(self, config: dict[str, Any], spec: ModelSpec) -> range:
        """PEFT adapts the top `adapter_layers` layers."""
        return range(spec.num_layers - config["adapter_layers"], spec.num_layers)

    def expected_shapes(self, config: dict[str, Any], spec: ModelSpec) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in self.adapted_layers(config, spec):
            path = self.LAYER_PATHS[spec.model_type].format(layer)
            shapes[f"{path}.adaption_prompt"] = (1, config["adapter_len"], spec.hidden_size)
            shapes[f"{path}.adaption_gate"] = (1,)
        return shapes

    def num_virtual_tokens(self, config: dict[str, Any]) -> int:
        return int(config["adapter_len"])

    def runtime_nbytes(self, config: dict[str, Any], spec: ModelSpec, dtype_bytes: int) -> int:
        # per adapted layer: keys and values of the A adapter tokens, and the gate
        return config["adapter_layers"] * (2 * config["adapter_len"] * spec.kv_dim + 1) * dtype_bytes

    def runtime_form(self, kind: str, places_prompt: bool) -> str:
        return "adaption_prompt"


METHODS: dict[str, PromptMethod] = {
    method.peft_type: method()
    for method in (PromptTuning, PTuning, Cpt, MultitaskPromptTuning, PrefixTuning, Cartridge, AdaptionPrompt)
}
