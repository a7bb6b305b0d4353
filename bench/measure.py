"""Side-by-side measurement: alternate the runs being compared, keep every sample, report median and spread.

Timings on a shared machine drift with whatever else runs; comparing two runs made moments
apart, many times over, cancels most of that drift. Every headline number is such a ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        return cls(statistics.median(samples), min(samples), max(samples), tuple(samples))


@dataclass(frozen=True)
class Target:
    """A goal for one measured value (mostly ratios): met when its median is on the right side of `goal`."""

    name: str
    value: Spread
    goal: float
    higher_is_better: bool = True
    unit: str = "×"

    @property
    def met(self) -> bool:
        value = self.value.median
        return value >= self.goal if self.higher_is_better else value <= self.goal

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Pairwise ratios of two runs taken side by side (sample i of each belongs together)."""
    return Spread.of([a / b for a, b in zip(numerators, denominators, strict=True)])


def alternate(runs: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every run once per repeat, rotating which goes first; collect what each returns."""
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runs[name]())
    return samples


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: torch.device) -> float:
    """Seconds `work` takes, with the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in (0, 1])."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]
