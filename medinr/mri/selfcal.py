"""Self-calibration of the INR fit: a regularisation path walked once, scored on held-out k-space.

The fit follows one *path*: regularisation weights fall geometrically from strong to weak while the grid
levels of a coarse-to-fine model are unlocked one by one. Along the path the image goes from over-smoothed
to noisy; the error on held-out acquired samples (never the ground truth) is recorded every few steps and
its minimum picks the weights, the active levels and the stopping step together. The final image is then
refitted on every acquired sample along the same path up to the chosen step.

Weights are relative: the data term is the whitened residual energy per voxel (noise of unit variance, see
:mod:`medinr.mri.noise`) and the priors are means per voxel of the image normalised to a robust maximum of
1, so a weight is the inverse of a typical prior magnitude and means the same on every scan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RegularisationPath:
    """Weights and capacity as a function of the step.

    Attributes
    ----------
    steps : int
        Nominal length of the path: the weights reach their ``*_end`` values here.
    extend : float
        The walk may go on to ``extend * steps`` (weights keep falling at the same geometric rate) while the
        held-out error still improves: as a CS lambda sweep widens, the path is not cut at its end when the
        best point lies there. The walk stops earlier when the held-out error stops improving.
    tv_start, tv_end : float
        Total-variation weight at the first and the nominal last step (geometric; equal: constant).
    wavelet_start, wavelet_end : float
        The same for the L1 Haar-wavelet weight.
    unlock_fraction : float
        All levels are active after this fraction of the path; level ``l`` unlocks at
        ``l / (levels - 1) * unlock_fraction`` of it (0: every level from the start).
    """

    steps: int = 300
    extend: float = 2.0
    tv_start: float = 30.0
    tv_end: float = 3.0
    wavelet_start: float = 30.0
    wavelet_end: float = 3.0
    unlock_fraction: float = 0.0

    def _geometric(self, start: float, end: float, step: int) -> float:
        t = step / max(1, self.steps - 1)
        if start <= 0 or end <= 0:  # a weight that is (or ends at) zero falls linearly, then stays at zero
            return float(max(0.0, start + (end - start) * min(t, 1.0)))
        return float(start * (end / start) ** t)

    @property
    def max_steps(self) -> int:
        return max(self.steps, int(round(self.steps * self.extend)))

    def tv(self, step: int) -> float:
        return self._geometric(self.tv_start, self.tv_end, step)

    def wavelet(self, step: int) -> float:
        return self._geometric(self.wavelet_start, self.wavelet_end, step)

    def active_levels(self, step: int, levels: int) -> int:
        """How many of the coarsest of a model's ``levels`` are active at ``step``."""
        if levels <= 1 or self.unlock_fraction <= 0:
            return levels
        t = step / max(1, self.steps * self.unlock_fraction)
        return min(levels, 1 + int(math.floor(t * (levels - 1) + 1e-9)))

    def at(self, step: int, levels: int) -> dict[str, float]:
        """The settings in force at ``step`` (what metrics.json records for the chosen step)."""
        return {"step": step, "tv": self.tv(step), "wavelet": self.wavelet(step),
                "levels": self.active_levels(step, levels)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationCurve:
    """Held-out error along the path, with the best point so far and a patience rule for stopping.

    Attributes
    ----------
    patience : int
        Evaluations without a relative improvement of at least ``min_gain`` before the walk stops.
    min_gain : float
    """

    patience: int = 6
    min_gain: float = 1e-3
    points: list[dict[str, float]] = field(default_factory=list)
    best: int = -1

    def add(self, settings: dict[str, float], error: float, fit_loss: float) -> bool:
        """Record one evaluation; True if it is the best so far."""
        self.points.append({**settings, "validation_error": float(error), "fit_loss": float(fit_loss)})
        if self.best < 0 or error < self.points[self.best]["validation_error"]:
            self.best = len(self.points) - 1
            return True
        return False

    def exhausted(self) -> bool:
        """True when the last ``patience`` evaluations brought no relative gain of ``min_gain`` on the best."""
        if self.best < 0 or len(self.points) - 1 - self.best < self.patience:
            return False
        best = self.points[self.best]["validation_error"]
        recent = min(p["validation_error"] for p in self.points[-self.patience :])
        return recent > best * (1 - self.min_gain)

    @property
    def best_step(self) -> int | None:
        return int(self.points[self.best]["step"]) if self.best >= 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"points": self.points, "best": self.points[self.best] if self.best >= 0 else None}
