"""Waiting on a condition with a deadline, for tests that watch real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], accept: Callable[[T], bool], what: str, timeout: float = 30.0) -> T:
    """Call `probe` until `accept` takes its answer; fail with the last answer after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if accept(answer):
            return answer
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}; last answer: {answer!r}"
        time.sleep(0.02)
