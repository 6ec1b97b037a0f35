"""Where a run's time goes: wall seconds per stage, kept apart from its results.

A run's ``metrics.json`` holds them under ``timing`` (set-up, each fit stage with its steps and seconds per
step, validation, baselines, writing), so that two runs with the same seed compare equal on everything else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Timings:
    """Seconds per named stage, in the order the stages ran (a stage timed twice adds up)."""

    def __init__(self) -> None:
        self.stages: dict[str, Any] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        current = self.stages.get(name, 0.0)
        self.stages[name] = (current if isinstance(current, float) else 0.0) + float(seconds)

    def record(self, name: str, detail: dict[str, Any]) -> None:
        """A stage with its own breakdown (a fit: seconds, steps, seconds per step, validation seconds)."""
        self.stages[name] = detail

    def to_dict(self) -> dict[str, Any]:
        return {**self.stages, "total": time.perf_counter() - self._start}
