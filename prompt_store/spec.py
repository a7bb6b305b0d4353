"""The shape facts of a served base model that artifacts are validated against."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

# What a served model is, and the PEFT `task_type` its artifacts must have been trained for.
MODEL_KINDS = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "encoder": "SEQ_CLS"}


@dataclass(frozen=True)
class ModelSpec:
    """What an artifact must agree with. Built by the server from the model config; plain data here."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int
    kind: str = "causal"  # one of MODEL_KINDS

    @property
    def is_encoder_decoder(self) -> bool:
        return self.kind == "seq2seq"

    @property
    def kv_dim(self) -> int:
        """Width of one layer's key (or value) per position: `num_key_value_heads * head_dim`."""
        return self.num_key_value_heads * self.head_dim

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes one position of a prefix takes on the device: a key and a value in every layer."""
        return 2 * self.num_layers * self.kv_dim * dtype_bytes

    def fingerprint(self) -> str:
        """A stable hash of the spec, recorded with every validated artifact."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
