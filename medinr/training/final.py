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
        'refit': fit again from the start on every sample, along the same schedule, up to the chosen step.
        'finetune': continue the chosen state on every sample for ``fraction`` of the chosen steps.
        'split': keep the chosen state as it is.
    fraction : float
        'finetune': its steps as a fraction of the chosen step (at least one).
    lr_scale : float
        'finetune': multiple of the learning rate.
    restart_schedule : bool
        'finetune': a fresh schedule over its own steps (an image fit's gentle refinement) instead of the
        walk's schedule picked up at the chosen step (a k-space path, whose weights keep falling).
    """

    kind: str = "refit"
    fraction: float = 0.25
    lr_scale: float = 1.0
    restart_schedule: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FINAL_STAGES:
            raise MedinrError(f"unknown final stage '{self.kind}' ({', '.join(FINAL_STAGES)})")
        if not (self.fraction > 0 and self.lr_scale > 0):
            raise MedinrError("a final stage's fraction and learning-rate scale must be positive")

    def extra_steps(self, chosen: int) -> int:
        return max(1, int(round(self.fraction * chosen)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, value: "FinalStage | str | dict") -> "FinalStage":
        """A final stage from its name (with the default fraction), a dict of its fields, or itself."""
        if isinstance(value, FinalStage):
            return value
        return cls(**value) if isinstance(value, dict) else cls(str(value))
