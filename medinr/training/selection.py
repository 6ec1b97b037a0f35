"""Choosing by held-out data: THE best-iterate rule, and the final stage that follows the choice.

A fit validated on a split (:mod:`medinr.training.validators`) keeps the state with the lowest held-out error,
or the latest within a band above it (:class:`BestIterate`), and stops when the error has not improved (or left
the band) for ``patience`` evaluations. What follows is a :class:`FinalStage`: refit from the start on every
sample up to the chosen step, fine-tune the chosen state on every sample, or keep the split's model.
:func:`fit_with_holdout` runs the whole sequence through the one loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from medinr.training.final import FinalStage
from medinr.training.loop import Schedule, TrainResult, fit
from medinr.training.validators import Validator


@dataclass
class BestIterate:
    """The held-out error along a fit, its best state so far, and the patience rule that ends the fit.

    Parameters
    ----------
    validator : Validator
        What is scored and when (``every``, ``warmup``).
    patience : int
        Evaluations without a gain on the best before the fit stops.
    min_gain : float
        Relative improvement on the best error that counts as a gain (0: any improvement). A smaller
        improvement still becomes the best state, but does not reset the patience.
    describe : callable, optional
        ``describe(step)`` -> settings in force at that step, recorded with each point (a path's weights).
    after_first_gain : bool
        Count the patience only once an error has gained on the first one: a fit still on the plateau of its
        starting state is not stopped there (a 3D tile fit's held-out PSNR stays at its initial 10 dB for about
        35 steps; with 100 steps and a patience of 20 it stopped at step 25 and kept the state of step 7).
    tolerance : float
        A band above the lowest error, in the validator's units (0: none). The chosen state is the latest one
        whose error is at most ``lowest + tolerance``, and an evaluation inside the band resets the patience.
        For a walk along a regularisation path from strong to weak weights: where the held-out error is flat
        within the band, the held-out data cannot tell the states apart, and the later (less smoothed) one is
        kept. The band is absolute, in the validator's units (a whitened k-space error: noise variances); a
        reconstruction uses it only where its held-out samples are noise-dominated
        (:func:`medinr.mri.inr_recon.held_out_rule`).
    """

    validator: Validator
    patience: int
    min_gain: float = 0.0
    describe: Callable[[int], dict] | None = None
    after_first_gain: bool = False
    tolerance: float = 0.0
    points: list[dict[str, Any]] = field(default_factory=list)
    best: int = -1
    best_model: Any = None
    since_gain: int = 0
    lowest: float = math.inf

    @property
    def uses_forward(self) -> bool:
        return self.validator.uses_forward

    def due(self, step: int) -> bool:
        return step >= self.validator.warmup and step % self.validator.every == 0

    def add(self, step: int, error: float, model: Any, loss: float | None = None) -> bool:
        """Record the error of the state after ``step`` steps (a copy of ``model`` is kept if it is the best)."""
        point = {"step": int(step), **(self.describe(step) if self.describe else {}), "validation_error": float(error)}
        if loss is not None:
            point["fit_loss"] = float(loss)
        self.points.append(point)
        before = self.lowest
        self.lowest = min(before, float(error))
        lower = self.best < 0 or error < before
        in_band = self.tolerance > 0 and error <= self.lowest + self.tolerance
        if not (lower or in_band):
            self.since_gain += 1
            return False
        gain = self.best < 0 or error < before * (1 - self.min_gain) or in_band
        self.since_gain = 0 if gain else self.since_gain + 1
        self.best, self.best_model = len(self.points) - 1, copy.deepcopy(model)
        return True

    def observe(self, step: int, model: Any, aux: Any = None, loss: float | None = None) -> bool:
        """Score ``model`` at ``step`` (from ``aux`` when the validator uses the forward pass); True: stop."""
        self.add(step, self.validator.error(model, step, aux), model, loss)
        return self.exhausted()

    def exhausted(self) -> bool:
        """True when the last ``patience`` evaluations brought no gain on the best."""
        if self.best < 0 or self.since_gain < self.patience:
            return False
        return not self.after_first_gain or self.lowest < self.points[0]["validation_error"] * (1 - self.min_gain)

    def finish(self, step: int, model: Any) -> None:
        """Score the state a fit ended in, unless that was just done: the last state is a candidate too."""
        if not self.points or self.points[-1]["step"] != step:
            self.add(step, self.validator.error(model, step, None), model)

    @property
    def best_error(self) -> float:
        return self.points[self.best]["validation_error"] if self.best >= 0 else math.inf

    @property
    def best_point(self) -> dict[str, Any]:
        return self.points[self.best]

    @property
    def best_step(self) -> int:
        return int(self.points[self.best]["step"]) if self.best >= 0 else 0


@dataclass
class HeldOutFit:
    """The outcome of :func:`fit_with_holdout`: the final model, the choice, and each stage's record."""

    model: Any
    selection: BestIterate
    walk: TrainResult
    final: TrainResult | None
    description: str

    @property
    def history(self) -> TrainResult:
        return self.walk if self.final is None else self.walk.then(self.final)


def fit_with_holdout(
    start: Any,
    objective_for: Callable[[Any, str], Callable],
    steps: int,
    lr: float,
    schedule: Schedule,
    selection: BestIterate,
    final: FinalStage,
    **options: Any,
) -> HeldOutFit:
    """Walk ``steps`` on the split with ``selection`` scoring it, choose the best iterate, then run ``final``.

    ``objective_for(model, stage)`` gives the objective of ``model`` for stage 'walk' (the fitting samples) or
    'refit' / 'finetune' (every sample). ``options`` go to :func:`medinr.training.fit` (``time_budget`` only to
    the walk).
    """
    model = copy.deepcopy(start) if final.kind == "refit" else start
    walk = fit(model, objective_for(model, "walk"), steps, lr, schedule, selection=selection, **options)
    options.pop("time_budget", None)
    chosen, best = max(1, selection.best_step), selection.best_model
    if final.kind == "split":
        return HeldOutFit(best, selection, walk, None, "the split's model at the chosen step")
    if final.kind == "refit":
        model = copy.deepcopy(start)
        objective, stretch, refit = objective_for(model, "refit"), final.stretch, final.refit_steps(chosen)
        how = f"refitted on every sample up to step {chosen}"
        if stretch != 1.0:  # the walk's schedule and objective, stretch times slower
            length = None if schedule.length is None else max(1, int(round(stretch * schedule.length)))
            schedule = replace(schedule, length=length, warmup=int(round(stretch * schedule.warmup)))
            objective = _slower(objective, stretch)
            how += f", {stretch:g}x slower along the path ({refit} steps)"
        last = fit(model, objective, refit, lr, schedule, **options)
        return HeldOutFit(model, selection, walk, last, how)
    extra = final.extra_steps(chosen)
    if final.restart_schedule:
        last = fit(best, objective_for(best, "finetune"), extra, lr * final.lr_scale, Schedule(schedule.kind),
                   **options)
    else:
        last = fit(best, objective_for(best, "finetune"), extra, lr * final.lr_scale, schedule, start=chosen,
                   **options)
    return HeldOutFit(best, selection, walk, last, f"the chosen model continued on every sample for {extra} steps")


def _slower(objective: Callable, stretch: float) -> Callable:
    """``objective`` with its step ``k`` taken as the walk's step ``k / stretch``."""
    return lambda step: objective(step / stretch)
