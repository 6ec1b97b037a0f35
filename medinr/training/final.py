"""The final stage of a fit validated on a split: what follows the choice of the best iterate.

Kept free of torch so that a request (:mod:`medinr.apps.requests`) can name and check it while arguments are
parsed; :func:`medinr.training.selection.fit_with_holdout` runs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from medinr.errors import MedinrError

FINAL_STAGES = ("refit", "finetune", "split")


@dataclass(frozen=True)
class FinalStage:
    """What follows the choice of the best iterate on a split.

    Attributes
    ----------
    kind : {'refit', 'finetune', 'split'}
        'refit': fit again from the start on every sample, along the same schedule, up to the chosen step
        (``stretch`` times slower).
        'finetune': continue the chosen state on every sample for ``fraction`` of the chosen steps.
        'split': keep the chosen state as it is.
    fraction : float
        'finetune': its steps as a fraction of the chosen step (at least one).
    lr_scale : float
        'finetune': multiple of the learning rate.
    restart_schedule : bool
        'finetune': a fresh schedule over its own steps (an image fit's gentle refinement) instead of the
        walk's schedule picked up at the chosen step (a k-space path, whose weights keep falling).
    stretch : float
        'refit': how many times slower the refit goes along the walk's schedule (at least 1): it runs
        ``stretch`` times the chosen steps, and its step ``k`` sees the objective and the learning-rate factor of
        the walk's step ``k / stretch``. Where the walk's weights fall faster than the fit converges, the refit
        then reaches the chosen point nearer to convergence.
    """

    kind: str = "refit"
    fraction: float = 0.25
    lr_scale: float = 1.0
    restart_schedule: bool = False
    stretch: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FINAL_STAGES:
            raise MedinrError(f"unknown final stage '{self.kind}' ({', '.join(FINAL_STAGES)})")
        if not (self.fraction > 0 and self.lr_scale > 0):
            raise MedinrError("a final stage's fraction and learning-rate scale must be positive")
        if not self.stretch >= 1.0 or self.stretch == float("inf"):
            raise MedinrError(f"a refit's stretch must be a finite number of at least 1, got {self.stretch}")

    def extra_steps(self, chosen: int) -> int:
        return max(1, int(round(self.fraction * chosen)))

    def refit_steps(self, chosen: int) -> int:
        """Steps of a refit up to the walk's step ``chosen``."""
        return max(1, int(round(self.stretch * chosen)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, value: "FinalStage | str | dict", **defaults: Any) -> "FinalStage":
        """A final stage from its name, a dict of its fields, or itself; a name or dict takes the fields it does
        not give from ``defaults`` (a task's own, e.g. its refit's stretch), then from the class."""
        if isinstance(value, FinalStage):
            return value
        return cls(**{**defaults, **value}) if isinstance(value, dict) else cls(str(value), **defaults)
