"""Report how closely LLaMA-Adapter rows and prompts placed inside the input match their references.

    python -m bench.placement_exactness

LLaMA-Adapter (llama, mistral, gpt2): the largest first-step logit difference between an adapter row
of a mixed batch (two adapters with different layer sets, a prompt, a prefix and base-model rows) and
PEFT's `forward` on that request alone. Placed prompts (`{prompt}` in a template; llama, gpt2,
gpt_neox, qwen2): the same against the model run directly on [input before] + PEFT's prompt + [input
after] as `inputs_embeds`. Uses the test suite's tiny random models and real PEFT artifacts.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from tests.conftest import Zoo, build_zoo
from tests.engine.test_adaption import TASKS as ADAPTER_TASKS
from tests.engine.test_adaption import peft_answer
from tests.engine.test_adaption import requests as adapter_requests
from tests.engine.test_templates import direct_greedy, placed_requests
from tests.factories import load_peft, make_artifact, make_model


def adapter_gap(arch: str, root: Path) -> tuple[int, float]:
    base = make_model(arch)
    tasks = enumerate(ADAPTER_TASKS.items())
    folders = {task: make_artifact(base, task, n, root / task, seed=i) for i, (task, n) in tasks}
    zoo = Zoo(arch, base, folders, {task: load_peft(base, folder) for task, folder in folders.items()})
    batch = adapter_requests(seed=1)
    logits = zoo.engine().next_token_logits(batch)
    gaps = [
        float((logits[i] - peft_answer(zoo, request)[1]).abs().max())
        for i, request in enumerate(batch)
        if request.task is not None and request.task.startswith("adaption")
    ]
    return len(batch), max(gaps)


def placement_gap(arch: str, root: Path) -> tuple[int, float]:
    zoo = build_zoo(arch, root)
    served = zoo.engine()
    rows = placed_requests(seed=4)
    requests = [replace(served.request(r.input_ids, r.task, **r.options), prompt_at=at) for r, at in rows]
    logits = served.engine.next_token_logits(requests)
    gaps = [
        float((logits[i] - direct_greedy(zoo, request, at)[1]).abs().max())
        for i, (request, at) in enumerate(rows)
        if at is not None
    ]
    return len(rows), max(gaps)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="placement-exactness-"))
    for arch in ("llama", "mistral", "gpt2"):
        size, gap = adapter_gap(arch, root / f"adapter-{arch}")
        print(f"LLaMA-Adapter {arch:8s} max |Δ logit| vs PEFT alone, mixed batch of {size}: {gap:.1e}")
    for arch in ("llama", "gpt2", "gpt_neox", "qwen2"):
        size, gap = placement_gap(arch, root / f"placed-{arch}")
        print(f"placed prompt {arch:8s} max |Δ logit| vs direct inputs_embeds, mixed batch of {size}: {gap:.1e}")


if __name__ == "__main__":
    main()
