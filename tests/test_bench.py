"""The benchmark's smoke run: every suite runs end to end on a tiny model and writes well-formed results.

Speed is not asserted here (targets live in bench/ as ratios); this keeps the benchmark code working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SUITES

ROOT = Path(__file__).resolve().parents[1]
SUITE_FILES = {"mixed": "mixed_vs_single"}  # module name -> result name, where they differ
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "bench", "--smoke", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def check_spread(spread: dict) -> None:
    assert spread["low"] <= spread["median"] <= spread["high"]
    assert len(spread["samples"]) >= 1


def test_every_suite_writes_its_json(results: Path) -> None:
    for suite in SUITES:
        body = json.loads((results / f"{SUITE_FILES.get(suite, suite)}.json").read_text())
        assert body["profile"] == "smoke"
        assert body["command"].startswith("python -m bench --smoke")
        assert body["machine"]["device"] == "cpu"
        assert body["data"] and "error" not in body["data"], body["data"]
        for target in body["targets"]:
            check_spread(target["value"])
            median, goal = target["value"]["median"], target["goal"]
            assert target["met"] == (median >= goal if target["higher_is_better"] else median <= goal)


def test_ratios_compare_runs_made_side_by_side(results: Path) -> None:
    mixed = json.loads((results / "mixed_vs_single.json").read_text())["data"]
    seconds = mixed["seconds"]
    assert len(seconds["mixed"]) == len(seconds["single"]) == 2  # the smoke profile's repeats
    expected = sorted(s / m for s, m in zip(seconds["single"], seconds["mixed"], strict=True))
    assert sorted(mixed["ratio"]["samples"]) == pytest.approx(expected)


def test_summary_lists_every_target_and_plots_exist(results: Path) -> None:
    summary = json.loads((results / "summary.json").read_text())
    table = (results / "summary.md").read_text().splitlines()
    assert len(summary["targets"]) >= 10
    assert len(table) == 2 + len(summary["targets"])
    for target in summary["targets"]:
        assert any(target["name"] in row for row in table)
    for plot in ("targets.png", "scaling.png"):
        assert (results / plot).read_bytes().startswith(PNG)


def test_hot_swap_uploads_were_served_without_errors(results: Path) -> None:
    hot_swap = json.loads((results / "hot_swap.json").read_text())["data"]
    for method in ("prompt_tuning", "prefix"):
        assert len(hot_swap[method]["upload_ms"]) == 2
        assert hot_swap[method]["failed_swaps"] == 0
