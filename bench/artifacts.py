"""Real PEFT artifacts, saved by PEFT's own `save_pretrained`, with random (untrained) prompt values."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import (
    CartridgeConfig,
    CPTConfig,
    MultitaskPromptTuningConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
)
from transformers import PreTrainedModel

PEFT_CONFIGS: dict[str, Callable[[int], PeftConfig]] = {
    "prompt_tuning": lambda n: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
    "p_tuning": lambda n: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=128),
    "prefix": lambda n: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
    "multitask": lambda n: MultitaskPromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=n, num_tasks=3, num_ranks=2
    ),
    "cpt": lambda n: CPTConfig(
        task_type="CAUSAL_LM", cpt_token_ids=list(range(5, 5 + n)), cpt_mask=[1] * n, cpt_tokens_type_mask=[1] * n
    ),
    "cartridge": lambda n: CartridgeConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
}


@dataclass(frozen=True)
class ArtifactFiles:
    folder: Path

    @property
    def config_bytes(self) -> bytes:
        return (self.folder / "adapter_config.json").read_bytes()

    @property
    def weights_bytes(self) -> bytes:
        return (self.folder / "adapter_model.safetensors").read_bytes()


def make_artifacts(
    base: PreTrainedModel, method: str, num_virtual_tokens: int, count: int, folder: Path, seed: int = 0
) -> list[ArtifactFiles]:
    """`count` artifacts of one method; each gets fresh random prompt values, then PEFT saves it."""
    peft_model = get_peft_model(copy.deepcopy(base), PEFT_CONFIGS[method](num_virtual_tokens))
    generator = torch.Generator().manual_seed(seed)
    made = []
    for index in range(count):
        with torch.no_grad():
            for parameter in peft_model.prompt_encoder.parameters():
                noise = torch.randn(parameter.shape, generator=generator) * 0.5
                parameter.copy_(noise.to(parameter.dtype))
        target = folder / f"{method}-{index}"
        peft_model.save_pretrained(str(target))
        made.append(ArtifactFiles(target))
    return made
