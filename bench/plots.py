"""PNG plots of the results (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt

from bench.results import SuiteResult

GREEN, RED = "#2a9d4b", "#c8402c"


def plot_targets(out: Path, results: Sequence[SuiteResult]) -> Path:
    """Every target as a bar of its median (whiskers: min–max) over its goal, one panel per target."""
    targets = [(r.name, t) for r in results for t in r.targets]
    columns = 4
    rows = -(-len(targets) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for axis, (suite, target) in zip(axes.flat, targets, strict=False):
        value = target.value
        color = GREEN if target.met else RED
        axis.bar([0], [value.median], color=color, width=0.5)
        axis.errorbar(
            [0], [value.median], yerr=[[value.median - value.low], [value.high - value.median]], color="k", capsize=4
        )
        axis.axhline(target.goal, color="k", linestyle="--", linewidth=1)
        axis.set_xticks([])
        axis.set_title(f"{suite}\n{target.name}", fontsize=7)
        axis.set_ylabel(target.unit, fontsize=7)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(targets) :]:
        axis.set_visible(False)
    figure.suptitle("median (whiskers: min–max) against the goal (dashed); green met, red missed", fontsize=9)
    figure.tight_layout()
    path = out / "targets.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(
    out: Path,
    name: str,
    panels: dict[str, dict[str, list[tuple[float, float, float, float]]]],
    ylabel: str = "tokens / s",
) -> Path:
    """Panels of curves: title -> {x label: [(x, median, low, high), ...]}."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, curve) in zip(axes.flat, panels.items(), strict=True):
        for label, points in curve.items():
            xs, medians, lows, highs = zip(*points, strict=True)
            axis.plot(xs, medians, marker="o", label=label)
            axis.fill_between(xs, lows, highs, alpha=0.2)
            axis.set_xlabel(label)
        axis.set_title(title, fontsize=9)
        axis.set_ylabel(ylabel)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = out / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
