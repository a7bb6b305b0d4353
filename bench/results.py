"""What a suite hands back, and how results are written: one JSON per suite, a summary JSON and table."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.measure import Target


@dataclass
class SuiteResult:
    name: str
    data: dict[str, Any]
    targets: list[Target] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # file names under the results folder
    seconds: float = 0.0


def machine(device: torch.device) -> dict[str, Any]:
    about: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15_min": os.getloadavg(),  # other work on the machine when the run started
        "device": str(device),
    }
    if device.type == "cuda":
        about["gpu"] = torch.cuda.get_device_name(device)
    return about


def to_json(value: Any) -> Any:
    """Dataclasses (Spread, ...) as objects; anything else json cannot write as a float."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return float(value)


def write_suite(out: Path, result: SuiteResult, meta: dict[str, Any]) -> Path:
    path = out / f"{result.name}.json"
    body = {
        **meta,
        "suite": result.name,
        "seconds": round(result.seconds, 2),
        "targets": [target.to_json() for target in result.targets],
        "plots": result.plots,
        "data": result.data,
    }
    path.write_text(json.dumps(body, indent=2, default=to_json) + "\n")
    return path


def write_summary(out: Path, results: list[SuiteResult], meta: dict[str, Any]) -> Path:
    rows = [(result.name, target) for result in results for target in result.targets]
    summary = {
        **meta,
        "load_average_at_end": os.getloadavg(),
        "suites": {result.name: round(result.seconds, 2) for result in results},
        "errors": {result.name: result.data["error"] for result in results if "error" in result.data},
        "targets": [{"suite": name, **target.to_json()} for name, target in rows],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "| suite | measurement | median | spread (min–max) | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, target in rows:
        value, sign = target.value, "≥" if target.higher_is_better else "≤"
        lines.append(
            f"| {name} | {target.name} | {value.median:.3g}{target.unit} | {value.low:.3g}–{value.high:.3g} | "
            f"{sign} {target.goal:g}{target.unit} | {'met' if target.met else '**missed**'} |"
        )
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
