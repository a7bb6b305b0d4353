"""A tiny Llama with a trained tokenizer saved to disk, real PEFT artifacts for it, and a live server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tests.factories import load_peft, make_artifact, make_model, make_tokenizer, peft_greedy
from tests.live_server import LiveServer, live_server

ADMIN_KEY = "admin-secret-for-tests"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
ARTIFACTS = {
    "pt": ("prompt_tuning", 6),
    "prefix": ("prefix", 4),
    "lstm": ("p_tuning_lstm", 5),
    "mpt": ("multitask", 3),
    "adapter": ("adaption_top2", 5),
}


@dataclass
class Site:
    """What the HTTP tests share: the model on disk, the artifacts, and PEFT's answers."""

    model_dir: Path
    artifacts: dict[str, Path]
    base: PreTrainedModel
    tokenizer: object
    peft_models: dict[str, torch.nn.Module]

    def peft_tokens(self, task: str | None, text: str, max_new_tokens: int, task_index: int | None = None) -> list[int]:
        """PEFT's greedy answer alone, tokenized as the server tokenizes (AutoTokenizer on the model dir)."""
        ids = self.tokenizer(text)["input_ids"]  # type: ignore[operator]
        model = self.peft_models[task] if task else self.base
        eos = frozenset({self.base.config.eos_token_id})
        return peft_greedy(model, ids, max_new_tokens, task_index, eos_token_ids=eos)[0]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("site")
    model_dir = root / "tiny-llama"
    make_model("llama").save_pretrained(model_dir)
    tokenizer = make_tokenizer(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    artifacts = {
        task: make_artifact(base, method, n, root / task, seed=seed)
        for seed, (task, (method, n)) in enumerate(ARTIFACTS.items())
    }
    return Site(
        model_dir, artifacts, base, AutoTokenizer.from_pretrained(model_dir),
        {task: load_peft(base, folder) for task, folder in artifacts.items()},
    )  # fmt: skip


@pytest.fixture(scope="session")
def server(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """promptswap serve with an admin key, on a file store, every artifact uploaded over HTTP."""
    root = tmp_path_factory.mktemp("server")
    store = (root / "prompts").as_uri()
    with live_server("--model", str(site.model_dir), "--store", store, "--admin-key", ADMIN_KEY, log_dir=root) as live:
        for task, folder in site.artifacts.items():
            files = {
                name: (name, (folder / name).read_bytes())
                for name in ("adapter_config.json", "adapter_model.safetensors")
            }
            response = httpx.post(
                f"{live.url}/v1/prompts/{task}", files=files, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert response.status_code == 201, response.text
        yield live
