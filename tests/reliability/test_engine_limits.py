"""Hostile requests against the engine (issue 21, engine side), on real servers:

- the two out-of-memory attacks (one classify request of 16 inputs × 100 labels × 3-token
  verbalizers; one 4,000-token stream with max_new_tokens 2,000 beside 31 short requests) keep
  the process's peak resident memory under the model plus the configured KV budget plus a bound
  on activations: the KV pool is allocated once and admission counts the slots rows really take;
- sampling fields outside their real bounds are refused at the edge, and a tiny top_p still
  samples a real token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForCausalLM, LlamaConfig

from tests.api.conftest import Site
from tests.factories import make_tokenizer
from tests.live_server import LiveServer, live_server
from tests.reliability.conftest import Backend
from tests.reliability.errors import assert_error

KV_CACHE_MB = 64
# Activations are bounded by the step's sizes: a 512-token prefill chunk and 512 scored tokens,
# whose logits over a 32,000-token vocabulary are 65 MB (with their log-softmax, twice that).
ACTIVATIONS_MB = 300
# A model whose caches cost something: 8 KiB of keys and values per position, a 32k vocabulary.
WIDE = LlamaConfig(
    vocab_size=32000, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip


@dataclass
class Wide:
    server: LiveServer
    pid: int
    tokenizer: object


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wide]:
    root = tmp_path_factory.mktemp("wide")
    model_dir = root / "wide-llama"
    AutoModelForCausalLM.from_config(WIDE).save_pretrained(model_dir)
    tokenizer = make_tokenizer(model_dir)
    args = ("--model", str(model_dir), "--store", (root / "prompts").as_uri(), "--kv-cache-mb", str(KV_CACHE_MB),
            "--max-prefill-tokens", "512", "--max-client-requests", "0", "--max-classify-tokens", "50000")  # fmt: skip
    with live_server(*args, log_dir=root) as live:
        yield Wide(live, live.process.pid, tokenizer)


def words(tokenizer: object, count: int) -> str:
    """A text of exactly `count` tokens."""
    text = " ".join(["film"] * count)
    while len(tokenizer(text)["input_ids"]) > count:  # type: ignore[operator]
        text = text[: text.rfind(" ")]
    assert len(tokenizer(text)["input_ids"]) == count  # type: ignore[operator]
    return text


def test_the_out_of_memory_attacks_stay_under_the_kv_budget(wide: Wide) -> None:
    url, pid = wide.server.url, wide.pid
    httpx.post(f"{url}/v1/generate", json={"inputs": "warm up", "parameters": {"max_new_tokens": 2}}, timeout=60)
    baseline = memory_kib(pid, "VmRSS")
    ceiling = baseline + (KV_CACHE_MB + ACTIVATIONS_MB) * 1024

    labels = [f"label number {i}" for i in range(100)]
    assert min(len(wide.tokenizer(f" {label}", add_special_tokens=False)["input_ids"]) for label in labels) >= 3  # type: ignore[operator]
    body = {"inputs": [f"review {i}: fine" for i in range(16)], "labels": {label: f" {label}" for label in labels}}
    answer = httpx.post(f"{url}/v1/classify", json=body, timeout=600)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"]) == 16
    assert memory_kib(pid, "VmHWM") < ceiling

    long_body = {"inputs": words(wide.tokenizer, 4000), "stream": True, "parameters": {"max_new_tokens": 2000}}
    streamed: list[str] = []
    started, answered = threading.Event(), threading.Event()

    def stream_until_the_short_ones_are_answered() -> None:
        with httpx.stream("POST", f"{url}/v1/generate", json=long_body, timeout=600) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    streamed.append(line)
                    started.set()
                if answered.is_set():
                    return  # leaving cancels the row

    reader = threading.Thread(target=stream_until_the_short_ones_are_answered)
    reader.start()
    assert started.wait(600), "the long stream produced no token"
    short = {"inputs": [f"short {i}" for i in range(31)], "parameters": {"max_new_tokens": 8}}
    shorts = httpx.post(f"{url}/v1/generate", json=short, timeout=600)
    answered.set()
    reader.join(600)
    assert shorts.status_code == 200, shorts.text
    assert all(output["usage"]["completion_tokens"] == 8 for output in shorts.json()["outputs"])
    assert len(streamed) > 8  # the long row ran beside the short ones all along
    assert memory_kib(pid, "VmHWM") < ceiling


def test_sampling_fields_outside_their_bounds_are_refused(backend: Backend, site: Site) -> None:
    vocab = len(site.tokenizer.get_vocab())  # type: ignore[attr-defined]
    url = f"{backend.url}/v1/generate"
    for parameters in ['{"top_k": 18446744073709551616}', '{"top_k": 1000000000}', '{"temperature": 1e-300}',
                       '{"temperature": 0.001}', '{"temperature": 1e309}', '{"top_p": 0}']:  # fmt: skip
        body = f'{{"task": "pt", "inputs": "Review:", "parameters": {parameters}}}'
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert_error(response, 400, "invalid_request")
    chat = {"model": "pt", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e-300}
    assert_error(httpx.post(f"{backend.url}/v1/chat/completions", json=chat, timeout=60), 400, "invalid_request")
    greedy = {"task": "pt", "inputs": "Review:", "parameters": {"max_new_tokens": 6}}
    expected = httpx.post(url, json=greedy, timeout=60).json()["outputs"][0]["token_ids"]
    tiny_top_p = {**greedy, "parameters": {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1e-300, "seed": 1}}
    assert httpx.post(url, json=tiny_top_p, timeout=60).json()["outputs"][0]["token_ids"] == expected
    full_top_k = {**greedy, "parameters": {"max_new_tokens": 6, "temperature": 0.7, "top_k": vocab, "seed": 1}}
    assert httpx.post(url, json=full_top_k, timeout=60).status_code == 200
