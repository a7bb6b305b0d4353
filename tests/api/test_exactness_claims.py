"""What "exact" means in the README and docs/api.md, as a user would check it: a row's greedy tokens are
the same whatever shares its batch; its classify probabilities agree to ~1e-6 (not bit for bit)."""

from __future__ import annotations

import httpx

from tests.api.conftest import Site
from tests.live_server import LiveServer

TEXT = "The film was"
OTHERS = [f"another review, number {i}, somewhat longer than the first one" for i in range(12)]
LABELS = ["good", "bad", "fine"]


def test_tokens_are_identical_and_probabilities_agree_to_1e6_whatever_shares_the_batch(
    server: LiveServer, site: Site
) -> None:
    def generate(inputs: list[str]) -> list[list[int]]:
        body = {"task": "prefix", "inputs": inputs, "parameters": {"max_new_tokens": 6}}
        answer = httpx.post(f"{server.url}/v1/generate", json=body, timeout=120).json()
        return [output["token_ids"] for output in answer["outputs"]]

    def classify(inputs: list[str]) -> list[dict[str, float]]:
        body = {"task": "pt", "inputs": inputs, "labels": LABELS}
        return [r["scores"] for r in httpx.post(f"{server.url}/v1/classify", json=body, timeout=120).json()["results"]]

    alone = generate([TEXT])[0]
    assert alone == site.peft_tokens("prefix", TEXT, 6)
    assert generate([*OTHERS[:5], TEXT, *OTHERS[5:]])[5] == alone
    scores_alone = classify([TEXT])[0]
    scores_batched = classify([*OTHERS, TEXT])[-1]
    assert max(abs(scores_alone[label] - scores_batched[label]) for label in LABELS) < 1e-5
