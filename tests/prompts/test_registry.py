"""Upload, resolve and hot swap on a real engine, with both registry backends (Redis on a real server)."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from prompt_store.artifact import parse_artifact
from prompt_store.errors import (
    ArtifactError,
    ArtifactMismatch,
    InvalidCard,
    PickleRefused,
    RuntimeFormTooLarge,
    UnknownTask,
)
from prompt_store.redis_store import RedisStore
from prompt_store.store import PromptStore
from server.api.errors import status_of
from server.engine.engine import Engine, Request
from server.engine.model import wrap_model
from server.engine.sampling import SamplingParams
from server.prompts.registry import Lease, PromptRegistry
from tests.factories import load_peft, make_artifact, make_model, peft_greedy
from tests.prompt_store.conftest import new_store

pytestmark = pytest.mark.anyio

INPUT = [5, 17, 42, 7]
NEW_TOKENS = 4


@dataclass
class Version:
    config: bytes
    weights: bytes
    expected: list[int]  # PEFT's greedy answer for INPUT


@dataclass
class World:
    engine: Engine
    versions: list[Version]  # v1: prompt tuning, v2: prefix tuning, v3: P-tuning


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = make_model("llama")
    root = tmp_path_factory.mktemp("registry")
    versions = []
    for seed, method in enumerate(["prompt_tuning", "prefix", "p_tuning_mlp"]):
        folder = make_artifact(base, method, 6, root / method, seed=seed)
        expected, _ = peft_greedy(load_peft(base, folder), INPUT, NEW_TOKENS)
        versions.append(
            Version(
                (folder / "adapter_config.json").read_bytes(),
                (folder / "adapter_model.safetensors").read_bytes(),
                expected,
            )
        )
    assert len({tuple(v.expected) for v in versions}) == 3, "each version answers differently"
    return World(Engine(wrap_model(copy.deepcopy(base), torch.device("cpu"))), versions)


def make_registry(store: PromptStore, engine: Engine, budget_bytes: int = 1 << 30) -> PromptRegistry:
    return PromptRegistry(
        store, engine.base.spec, engine.build_prompt, budget_bytes, cache_pointers=isinstance(store, RedisStore)
    )


@pytest.fixture(params=["file", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> AsyncIterator[PromptStore]:
    store = new_store(request.param, tmp_path, redis_url, f"registry-{uuid.uuid4().hex}:")
    yield store
    await store.close()


def versions_cached(registry: PromptRegistry) -> list[tuple[str, int]]:
    """(task, version) of every form in the device cache, least recently used first."""
    return [(task, version) for task, version, _ in registry.pool.lru_keys()]


def answer(engine: Engine, lease: Lease) -> list[int]:
    params = SamplingParams(max_new_tokens=NEW_TOKENS, stop_at_eos=False)
    request = Request(INPUT, prompt=lease.prompt, params=params)
    return engine.generate([request])[0].token_ids


async def serve(
    registry: PromptRegistry, engine: Engine, task: str, version: int | None = None
) -> tuple[int, list[int]]:
    lease = await registry.acquire(task, version)
    try:
        return lease.record.version, answer(engine, lease)
    finally:
        registry.release(lease)


async def test_upload_is_servable_at_once_and_exact(store: PromptStore, world: World) -> None:
    registry = make_registry(store, world.engine)
    v1 = world.versions[0]
    record = (
        await registry.upload("t", v1.config, v1.weights, b'{"description": "demo", "template": "Q: {input}"}')
    ).record
    assert (record.task, record.version, record.peft_type, record.num_virtual_tokens) == ("t", 1, "PROMPT_TUNING", 6)
    assert record.card is not None and record.card.template == "Q: {input}"
    assert record.spec_fingerprint == world.engine.base.spec.fingerprint()
    assert await serve(registry, world.engine, "t") == (1, v1.expected)
    assert (registry.pool.stats.hits, registry.pool.stats.misses) == (1, 0)  # built before the upload returned
    assert registry.pool.nbytes == registry.pool.peek(("t", 1, record.sha256)).nbytes > 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (
            lambda c, w, card: (c, save({"prompt_embeddings": load(w)["prompt_embeddings"] * math.nan}), card),
            ArtifactError,
        ),
        (lambda c, w, card: (c, b"\x80\x04K\x01.", card), PickleRefused),
        (lambda c, w, card: (json.dumps({**json.loads(c), "num_layers": 7}).encode(), w, card), ArtifactMismatch),
        (lambda c, w, card: (c, w, b'{"template": "no placeholder"}'), InvalidCard),
        (lambda c, w, card: (c, w, b'{"colour": "blue"}'), InvalidCard),
    ],
)
async def test_a_rejected_upload_changes_nothing(store: PromptStore, world: World, mangle, error) -> None:
    registry = make_registry(store, world.engine)
    v1, v2 = world.versions[:2]
    await registry.upload("t", v1.config, v1.weights)
    config, weights, card = mangle(v2.config, v2.weights, None)
    with pytest.raises(error):
        await registry.upload("t", config, weights, card)
    with pytest.raises(error):
        await registry.upload("fresh", config, weights, card)
    assert await store.list_tasks() == {"t": 1}
    assert [r.version for r in await store.list_versions("t")] == [1]
    assert versions_cached(registry) == [("t", 1)]


async def test_a_miss_loads_from_the_store_once(store: PromptStore, world: World) -> None:
    writer = make_registry(store, world.engine)
    for v in world.versions[:2]:
        await writer.upload("t", v.config, v.weights)
    builds = 0

    def counting_build(artifact):  # type: ignore[no-untyped-def]
        nonlocal builds
        builds += 1
        return world.engine.build_prompt(artifact)

    reader = PromptRegistry(store, world.engine.base.spec, counting_build, 1 << 30)  # a fresh device cache
    results = await asyncio.gather(*[serve(reader, world.engine, "t") for _ in range(5)])
    assert results == [(2, world.versions[1].expected)] * 5
    assert builds == 1
    assert await serve(reader, world.engine, "t", version=1) == (1, world.versions[0].expected)
    assert builds == 2
    with pytest.raises(UnknownTask):
        await reader.acquire("missing")


async def test_the_device_budget_evicts_old_versions(store: PromptStore, world: World) -> None:
    registry = make_registry(store, world.engine)
    await registry.upload("a", world.versions[0].config, world.versions[0].weights)
    one_form = registry.pool.nbytes
    registry.pool.budget_bytes = 2 * one_form
    for task in ("b", "c"):
        await registry.upload(task, world.versions[0].config, world.versions[0].weights)
    assert versions_cached(registry) == [("b", 1), ("c", 1)]
    assert await serve(registry, world.engine, "a") == (1, world.versions[0].expected)  # evicted: loads again
    assert versions_cached(registry) == [("c", 1), ("a", 1)]
    assert registry.pool.stats.evictions == 2


async def test_hot_swap_under_load(store: PromptStore, world: World) -> None:
    """4 threads generate without pause while v2 is uploaded, v1 restored and the task deleted."""
    registry = make_registry(store, world.engine)
    v1, v2 = world.versions[:2]
    await registry.upload("t", v1.config, v1.weights)
    expected_by_phase = [1, 2, 1, None]  # version in force after each change; None: deleted
    phase = 0
    served: list[tuple[int, int, int, list[int]]] = []  # (phase before, phase after admission, version, tokens)
    refused: list[bool] = []  # for each refusal: had the delete begun?
    deleting = False
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            before = phase
            try:
                lease = await registry.acquire("t")
            except UnknownTask:
                refused.append(deleting)
                await asyncio.sleep(0.01)
                continue
            after = phase
            try:
                tokens = await asyncio.to_thread(answer, world.engine, lease)
            finally:
                registry.release(lease)
            served.append((before, after, lease.record.version, tokens))

    async def wait_for_requests(count: int) -> None:
        start = len(served)
        while len(served) < start + count:
            await asyncio.sleep(0.01)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    await wait_for_requests(8)
    await registry.upload("t", v2.config, v2.weights)
    phase = 1
    await wait_for_requests(8)
    await registry.rollback("t", 1)
    phase = 2
    await wait_for_requests(8)
    deleting = True
    await registry.delete("t")
    phase = 3
    while len(refused) < 4:  # every worker has now been refused at least once, or one of them four times
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*workers)

    expected_tokens = {1: v1.expected, 2: v2.expected}
    for before, after, version, tokens in served:
        assert tokens == expected_tokens[version], "a request mixed versions"
        # A slow admission may span several changes: it gets a version in force at some moment of it. A change
        # is in force from its commit, a moment before the call making it returns and the phase advances.
        in_force = range(before, min(after + 2, len(expected_by_phase)))
        assert version in {expected_by_phase[p] for p in in_force}
    assert {before for before, after, _, _ in served if before == after} >= {0, 1, 2}
    assert refused and all(refused), "only requests made once the delete began are refused"
    assert registry.pool.lru_keys() == []


async def test_replicas_follow_each_other_through_redis(redis_url: str, world: World) -> None:
    prefix = f"replicas-{uuid.uuid4().hex}:"
    store_a, store_b = RedisStore.from_url(redis_url, prefix=prefix), RedisStore.from_url(redis_url, prefix=prefix)
    a, b = make_registry(store_a, world.engine), make_registry(store_b, world.engine)
    watcher = asyncio.create_task(b.watch())  # subscribing clears B's pointers (resync), so no race with it

    async def b_serves(version: int | None) -> None:
        deadline = asyncio.get_running_loop().time() + 1.0
        while True:
            try:
                got = (await serve(b, world.engine, "t"))[0]
            except UnknownTask:
                got = None
            if got == version:
                return
            assert asyncio.get_running_loop().time() < deadline, f"replica B serves {got}, wanted {version}"
            await asyncio.sleep(0.02)

    v1, v2 = world.versions[:2]
    await a.upload("t", v1.config, v1.weights)
    await b_serves(1)
    await a.upload("t", v2.config, v2.weights)
    await b_serves(2)  # B had v1's pointer cached: the change event moved it
    assert await serve(b, world.engine, "t") == (2, v2.expected)
    await a.rollback("t", 1)
    await b_serves(1)
    await a.delete("t")
    await b_serves(None)
    assert b.pool.lru_keys() == []
    watcher.cancel()
    await store_a.close()
    await store_b.close()


async def test_resync_drops_forms_that_changed_while_events_were_missed(redis_url: str, world: World) -> None:
    prefix = f"resync-{uuid.uuid4().hex}:"
    store_a, store_b = RedisStore.from_url(redis_url, prefix=prefix), RedisStore.from_url(redis_url, prefix=prefix)
    a, b = make_registry(store_a, world.engine), make_registry(store_b, world.engine)
    v1, v3 = world.versions[0], world.versions[2]
    await a.upload("t", v1.config, v1.weights)
    assert await serve(b, world.engine, "t") == (1, v1.expected)  # B caches (t, 1); B is not watching
    await a.delete("t")
    await a.upload("t", v3.config, v3.weights)  # a different artifact, again version 1
    await b.resync()  # what B does when it (re)subscribes
    assert await serve(b, world.engine, "t") == (1, v3.expected)
    await store_a.close()
    await store_b.close()


class GatedStore:
    """A store whose reads of one version's bytes wait for `gate`: a load can be held between
    reading the old artifact and building it, while the test deletes and re-uploads the task."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store
        self.read = asyncio.Event()  # the held load has its bytes
        self.gate = asyncio.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.store, name)

    async def get_version(self, task: str, version: int):  # type: ignore[no-untyped-def]
        stored = await self.store.get_version(task, version)
        self.read.set()
        await self.gate.wait()
        return stored


@pytest.mark.parametrize("late", ["before_the_new_upload", "after_the_new_upload"])
async def test_a_late_build_of_a_deleted_version_is_never_served_as_its_successor(
    store: PromptStore, world: World, late: str
) -> None:
    """A miss starts loading (t, 1) = artifact A; t is deleted; B is uploaded as the new (t, 1). However the
    late build of A and B's upload interleave, every request admitted after B's upload gets B."""
    a, b = world.versions[0], world.versions[2]
    await make_registry(store, world.engine).upload("t", a.config, a.weights)
    gated = GatedStore(store)
    registry = make_registry(gated, world.engine)  # type: ignore[arg-type]  # a replica that has not cached t
    first = asyncio.create_task(registry.acquire("t"))
    await gated.read.wait()  # the load read A's bytes and waits to build them
    await registry.delete("t")
    if late == "after_the_new_upload":
        record = (await registry.upload("t", b.config, b.weights)).record
        gated.gate.set()
        old = await first
    else:
        gated.gate.set()
        old = await first
        record = (await registry.upload("t", b.config, b.weights)).record
    assert old.record.sha256 != record.sha256 and answer(world.engine, old) == a.expected  # admitted before delete
    registry.release(old)
    for _ in range(2):  # the first from the cache the upload filled, the second as well
        lease = await registry.acquire("t")
        assert (lease.record.version, lease.record.sha256) == (1, record.sha256)
        assert answer(world.engine, lease) == b.expected
        registry.release(lease)
    assert versions_cached(registry) == [("t", 1)]


async def test_the_runtime_size_is_known_before_anything_is_built(store: PromptStore, world: World) -> None:
    """Every method's form is measured from its config and the model before it is built, never less than
    what is built; past the limit the upload is refused (413) and nothing is built or stored."""
    built = []

    def build(artifact):  # type: ignore[no-untyped-def]
        built.append(artifact.peft_type)
        return world.engine.build_prompt(artifact)

    spec = world.engine.base.spec
    registry = PromptRegistry(store, spec, build, 1 << 30)
    for index, version in enumerate(world.versions):
        artifact = parse_artifact(version.config, version.weights, spec)
        await registry.upload(f"t{index}", version.config, version.weights)
        lease = await registry.acquire(f"t{index}")
        estimate = artifact.runtime_nbytes(spec, dtype_bytes=4)
        assert lease.prompt.nbytes <= estimate <= 2 * lease.prompt.nbytes, artifact.peft_type
        registry.release(lease)
        tight = PromptRegistry(store, spec, build, 1 << 30, max_form_bytes=estimate - 1)
        count = len(built)
        with pytest.raises(RuntimeFormTooLarge) as refused:
            await tight.upload("refused", version.config, version.weights)
        assert status_of(refused.value) == 413 and str(estimate) in refused.value.message
        with pytest.raises(RuntimeFormTooLarge):  # a version stored under a larger limit is not built either
            await tight.acquire(f"t{index}")
        assert len(built) == count
    assert "refused" not in await store.list_tasks()


async def test_uploading_the_current_version_again_creates_nothing(store: PromptStore, world: World) -> None:
    registry = make_registry(store, world.engine)
    v1, v2 = world.versions[:2]
    card = b'{"template": "Q: {input}"}'
    first = await registry.upload("t", v1.config, v1.weights, card)
    again = await registry.upload("t", v1.config, v1.weights, card)
    assert (first.created, again.created) == (True, False) and again.record == first.record
    assert [r.version for r in await store.list_versions("t")] == [1]
    # Another card, or the same bytes once another version is current, is a new version.
    recarded = await registry.upload("t", v1.config, v1.weights, b'{"template": "A: {input}"}')
    await registry.upload("t", v2.config, v2.weights)
    back = await registry.upload("t", v1.config, v1.weights, card)
    assert (recarded.record.version, back.record.version, back.created) == (2, 4, True)
