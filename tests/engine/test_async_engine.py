"""The engine thread behind the server: streaming, late arrivals, cancellation, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from server.api.errors import status_of
from server.engine import core as core_module
from server.engine.async_engine import AsyncEngine, EngineFailed
from server.engine.scheduler import SchedulerConfig
from tests.conftest import Served, Zoo

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for a condition the engine thread makes true (polling; fails after `timeout`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# Rows that cannot end by themselves while a test watches them, however slow the machine: tests cancel them.
ENDLESS = 8000


@pytest.fixture
async def running(llama_zoo: Zoo) -> AsyncIterator[tuple[Served, AsyncEngine]]:
    served = llama_zoo.engine(positions=ENDLESS + 16)
    engine = AsyncEngine(served.engine.core(SchedulerConfig(max_batch_size=8)))
    engine.start()
    yield served, engine
    await engine.stop()


async def test_streamed_events_add_up_to_the_answer(running: tuple[Served, AsyncEngine]) -> None:
    served, engine = running
    prompt = served.engine.tokenizer("Café crème")["input_ids"]  # type: ignore[misc]
    request = served.request(prompt, "p_tuning_lstm", max_new_tokens=10, stop_at_eos=False)
    events = [event async for event in engine.submit(request)]
    tokens = [e.token_id for e in events if e.token_id is not None]
    assert len(tokens) == 10 and events[-1].finish_reason == "length"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens == 10
    assert events[-1].usage.virtual_tokens == 4 and events[-1].usage.prompt_tokens == len(prompt)
    expected = served.engine.generate([request])[0]
    assert tokens == expected.token_ids
    assert "".join(e.text for e in events) == expected.text


async def test_a_late_request_starts_before_the_running_ones_finish(running: tuple[Served, AsyncEngine]) -> None:
    served, engine = running
    long_streams = [
        engine.submit(served.request([i + 3, 9], max_new_tokens=ENDLESS, stop_at_eos=False)) for i in range(3)
    ]
    finished: list[str] = []
    tokens: dict[str, int] = {}

    async def drain(name: str, stream) -> None:  # type: ignore[no-untyped-def]
        async for event in stream:
            tokens[name] = tokens.get(name, 0) + (event.token_id is not None)
            if event.finish_reason:
                finished.append(name)

    tasks = [asyncio.create_task(drain(f"long{i}", s)) for i, s in enumerate(long_streams)]
    await until(lambda: all(tokens.get(f"long{i}", 0) >= 3 for i in range(3)))  # the long requests are decoding
    short = engine.submit(served.request([7, 7, 7], "prefix", max_new_tokens=2))
    await drain("short", short)
    assert finished == ["short"], "the short request had to wait for the whole batch"
    for stream in long_streams:
        stream.cancel()
    await asyncio.gather(*tasks)
    assert sorted(finished) == ["long0", "long1", "long2", "short"]


async def test_a_consumer_that_goes_away_frees_its_row(running: tuple[Served, AsyncEngine]) -> None:
    served, engine = running
    stream = engine.submit(served.request([1, 2, 3], "cpt", max_new_tokens=ENDLESS, stop_at_eos=False))
    other = engine.submit(served.request([4, 5, 6], max_new_tokens=ENDLESS, stop_at_eos=False))
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break  # the client disconnected
    assert engine.core is not None
    core = engine.core

    def cancelled() -> float | None:
        return core.metrics.registry.get_sample_value("promptswap_requests_finished_total", {"reason": "cancelled"})

    await until(lambda: cancelled() == 1)  # noticed, long before it could have ended by itself
    assert len(core.running) == 1
    other.cancel()
    result = await other.result()
    assert result.finish_reason == "cancelled" and len(result.token_ids) < ENDLESS
    await until(lambda: not engine.core.has_work and engine.streams == {})


async def test_a_failed_step_ends_the_running_requests_and_the_engine_goes_on(
    running: tuple[Served, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, engine = running
    runner = served.engine.runner
    real_forward = runner.forward

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(runner, "forward", real_forward)
        raise RuntimeError("CUDA error: an illegal memory access (simulated)")

    monkeypatch.setattr(runner, "forward", broken)
    with pytest.raises(EngineFailed) as caught:
        await engine.submit(served.request([1, 2], max_new_tokens=5)).result()
    assert status_of(caught.value) == 503
    after = await engine.submit(served.request([1, 2], max_new_tokens=5, stop_at_eos=False)).result()
    assert len(after.token_ids) == 5


async def test_a_row_that_fails_the_model_step_fails_alone(
    running: tuple[Served, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step is run again without the row that makes it fail: that request gets 503, the three
    others sharing its steps get exactly their answers alone."""
    served, engine = running
    runner = served.engine.runner
    real_forward = runner.forward
    poison = 13

    def forward(cache, works):  # type: ignore[no-untyped-def]
        if any(work.start == 0 and poison in work.token_ids for work in works):
            raise RuntimeError("a kernel refused this row (simulated)")
        return real_forward(cache, works)

    monkeypatch.setattr(runner, "forward", forward)
    others = [served.request([1, 2, i], "prefix", max_new_tokens=6, stop_at_eos=False) for i in (3, 4, 5)]
    streams = [engine.submit(request) for request in [served.request([1, poison, 2], max_new_tokens=6), *others]]
    with pytest.raises(EngineFailed) as caught:
        await streams[0].result()
    assert status_of(caught.value) == 503
    results = [await stream.result() for stream in streams[1:]]
    monkeypatch.setattr(runner, "forward", real_forward)
    for request, result in zip(others, results, strict=True):
        assert result.finish_reason == "length" and result.token_ids == served.engine.generate([request])[0].token_ids


async def test_a_row_whose_sampling_fails_fails_alone(
    running: tuple[Served, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, engine = running
    real_sample = core_module.sample

    def sample(logits, rows):  # type: ignore[no-untyped-def]
        if any(row.params.seed == 666 for row in rows):
            raise RuntimeError("invalid multinomial distribution (simulated)")
        return real_sample(logits, rows)

    monkeypatch.setattr(core_module, "sample", sample)
    bad = served.request([1, 2, 3], max_new_tokens=6, temperature=1.0, seed=666)
    good = [served.request([4, 5, i], max_new_tokens=6, temperature=1.0, seed=i, stop_at_eos=False) for i in (1, 2)]
    streams = [engine.submit(request) for request in [bad, *good]]
    with pytest.raises(EngineFailed):
        await streams[0].result()
    results = [await stream.result() for stream in streams[1:]]
    monkeypatch.setattr(core_module, "sample", real_sample)
    for request, result in zip(good, results, strict=True):
        assert result.token_ids == served.engine.generate([request])[0].token_ids
