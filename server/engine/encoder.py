"""Encoder classifiers (BERT-style): rows of many tasks in one forward pass, each scored by its own head.

What PEFT's `PeftModelForSequenceClassification.forward` does for one request, and what each
row here gets:
- prompt tuning / P-tuning / MPT: the N virtual embeddings go in front of the input's token
  embeddings; the model adds position embeddings 0..N+T-1 and token type 0 to all of them, and
  the pooler reads the first position, which is the first virtual token.
- prefix tuning: the stored keys/values are the cache; BERT offsets the input's positions by the
  cache length (N..N+T-1), the mask covers prefix and input, and the pooler reads [CLS].
The pooled output goes through the task's linear head. Attention is bidirectional and BERT's
keys carry no position, so rows are right-padded (the pooler's position 0 is each row's first
token) and prefix keys may sit anywhere in the cache as long as the mask marks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from server.engine.checks import check_input_ids, check_task_index
from server.engine.kv_cache import KVState
from server.engine.model import BaseModel
from server.engine.request import PAD_TOKEN_ID, Request
from server.errors import ContextTooLong, InvalidRequest
from server.prompts.encoder_forms import EncoderPrompt
from server.prompts.forms import PrefixKV


class EncoderRunner:
    """Runs the frozen encoder with its pooler; one forward pass for the whole batch."""

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = base.model
        self.device = base.device

    def check(self, request: Request) -> None:
        """A classification request must name a task with a head and fit the position table."""
        spec = self.base.spec
        if not isinstance(request.prompt, EncoderPrompt):
            raise InvalidRequest("task: this model is an encoder classifier; name a task, whose head scores the input")
        check_input_ids(request.input_ids, spec.vocab_size)
        check_task_index(request.prompt, request.task_index)
        needed = request.prompt.num_virtual_tokens + len(request.input_ids)
        if needed > spec.max_positions:
            raise ContextTooLong(
                f"virtual tokens + input tokens = {needed}, but the model takes at most {spec.max_positions} positions"
            )

    @torch.inference_mode()
    def classify(self, requests: Sequence[Request]) -> list[torch.Tensor]:
        """Each row's head logits, [C_i] in float32 (C_i = labels of row i's task)."""
        for request in requests:
            self.check(request)
        pooled = self.pooled(requests)  # [B, D]
        logits = []
        for row, request in enumerate(requests):
            assert isinstance(request.prompt, EncoderPrompt)
            head = request.prompt.head
            logits.append(torch.nn.functional.linear(pooled[row], head.weight, head.bias).float())  # [C_i]
        return logits

    @torch.inference_mode()
    def pooled(self, requests: Sequence[Request]) -> torch.Tensor:
        """The pooler's output [B, D] per row (rows without a prompt get the base model's)."""
        prefixes = [prefix_of(r) for r in requests]
        virtual = [virtual_of(r) for r in requests]  # each [N_i, D] or None
        num_front = [v.shape[0] if v is not None else 0 for v in virtual]
        num_input = [len(r.input_ids) for r in requests]
        seq_len = max(f + t for f, t in zip(num_front, num_input, strict=True))
        num_prefix = [p.num_virtual_tokens if p is not None else 0 for p in prefixes]
        prefix_len = max(num_prefix)

        input_ids = torch.full((len(requests), seq_len), PAD_TOKEN_ID, dtype=torch.long)  # [B, S]
        for row, request in enumerate(requests):
            start = num_front[row]
            input_ids[row, start : start + num_input[row]] = torch.tensor(request.input_ids, dtype=torch.long)
        embeds = self.model.get_input_embeddings()(input_ids.to(self.device))  # [B, S, D]
        for row, front in enumerate(virtual):
            if front is not None:
                embeds[row, : front.shape[0]] = front.to(embeds.dtype)

        columns = torch.arange(prefix_len + seq_len)  # [P + S]
        lengths = torch.tensor(num_front) + torch.tensor(num_input)  # [B]
        is_prefix = (columns[None] < prefix_len) & (columns[None] >= prefix_len - torch.tensor(num_prefix)[:, None])
        is_row = (columns[None] >= prefix_len) & (columns[None] < prefix_len + lengths[:, None])
        attention_mask = (is_prefix | is_row).long()  # [B, P + S]
        # A prefix row's input starts at position N_i, as BERT offsets it by the cache length alone.
        positions = torch.tensor(num_prefix)[:, None] + torch.arange(seq_len)  # [B, S]
        positions = positions.clamp(max=self.base.spec.max_positions - 1)  # pads past the table: any valid one

        cache = KVState.from_prefixes(prefixes, prefix_len, self.like(prefixes)).model_kwargs() if prefix_len else {}
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask.to(self.device),
            position_ids=positions.to(self.device),
            token_type_ids=torch.zeros_like(input_ids).to(self.device),
            **cache,
        )
        pooled: torch.Tensor = out.pooler_output  # [B, D]
        return pooled

    @staticmethod
    def like(prefixes: Sequence[PrefixKV | None]) -> PrefixKV:
        return next(p for p in prefixes if p is not None)


def prefix_of(request: Request) -> PrefixKV | None:
    prompt = request.prompt
    form = prompt.prefixes[request.task_index] if prompt is not None and prompt.prefixes else None
    return form if isinstance(form, PrefixKV) else None


def virtual_of(request: Request) -> torch.Tensor | None:
    """The embeddings [N, D] that go in front of the input, or None (prefix tuning, no task)."""
    prompt = request.prompt
    if prompt is None or not prompt.embeddings:
        return None
    return prompt.embeddings[request.task_index].embeddings
