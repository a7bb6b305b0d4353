"""Mutation testing: would the tests notice a bug? Not part of CI (it runs the tests once per mutant).

    python -m tests.mutation engine            # server/engine/ against tests/engine
    python -m tests.mutation prompts store     # several packages, one after the other
    python -m tests.mutation scheduler         # the scheduler and allocator alone (a minute)

Each run works on a copy of the committed tree (`git archive HEAD`), so the checkout is never touched:
mutmut rewrites the package's functions one small change at a time (an operator, a constant, a
condition) and runs the tests that cover each function. A mutant the tests fail on is killed; one they
pass is a survivor, listed with its diff command. The kill rate counts mutants some test covers; the
ones no selected test reaches are reported apart. Results stay in the printed folder for `mutmut show`.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    mutate: tuple[str, ...]  # files or folders mutated
    tests: tuple[str, ...]  # the fast in-process tests that judge them


TARGETS = {
    "engine": Target(("server/engine/",), ("tests/engine/",)),
    "prompts": Target(("server/prompts/",), ("tests/prompts/",)),
    "store": Target(("prompt_store/",), ("tests/prompt_store/",)),
    "scheduler": Target(
        ("server/engine/scheduler.py", "server/engine/allocator.py"), ("tests/engine/test_scheduler.py",)
    ),
}


def config(target: Target) -> str:
    """The [tool.mutmut] table: mutate only the target, copy the rest of the project beside it."""
    packages = ["server/", "prompt_store/", "clients/", "bench/"]
    mutate = ", ".join(f'"{path}"' for path in target.mutate)
    copy = ", ".join(f'"{path}"' for path in packages)
    tests = ", ".join(f'"{path}"' for path in target.tests)
    return (
        f"\n[tool.mutmut]\nsource_paths = [{mutate}]\nalso_copy = [{copy}]\n"
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
    )


def run(name: str, target: Target) -> dict[str, int]:
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    with open(work / "pyproject.toml", "a") as pyproject:
        pyproject.write(config(target))
    log = work / "mutmut.log"
    with open(log, "wb") as output:
        subprocess.run(["mutmut", "run"], cwd=work, stdout=output, stderr=subprocess.STDOUT, check=False)
    results = subprocess.run(
        ["mutmut", "results", "--all", "true"], cwd=work, capture_output=True, text=True, check=True
    ).stdout
    outcomes = collections.Counter(line.rsplit(": ", 1)[-1].strip() for line in results.splitlines() if ": " in line)
    survivors = [line.split(":")[0].strip() for line in results.splitlines() if line.endswith(": survived")]
    judged = outcomes["killed"] + outcomes["survived"] + outcomes["timeout"]
    rate = outcomes["killed"] / judged if judged else float("nan")
    print(f"\n== {name}: {', '.join(target.mutate)} against {', '.join(target.tests)}  ({work})")
    print(f"killed {outcomes['killed']} of {judged} covered mutants: {rate:.1%}; " + ", ".join(
        f"{outcome} {count}" for outcome, count in sorted(outcomes.items()) if outcome != "killed"
    ))  # fmt: skip
    for survivor in survivors:
        print(f"  survived: {survivor}   (cd {work} && mutmut show {survivor})")
    return dict(outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", choices=sorted(TARGETS))
    args = parser.parse_args()
    for name in args.targets:
        run(name, TARGETS[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
