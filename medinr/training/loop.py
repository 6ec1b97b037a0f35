"""THE training loop: every fit in medinr (image, k-space, registration, priors) is Adam through :func:`fit`.

The loop owns what a model asks of a fit (:class:`Trainable`): its Adam parameter groups, its training schedule
(``training_progress``: e.g. a KAN's grid extension, after which the optimiser is rebuilt keeping the Adam state
of every parameter that survived), and its own regulariser (``regularization()``, added to the loss). It also
owns the learning-rate schedule, the divergence check (one :class:`~medinr.errors.MedinrError` line), the
progress bar, the time budget, the held-out validation (a :class:`~medinr.training.validators.Validator` with
the best-iterate rule of :class:`~medinr.training.selection.BestIterate`) and the timing of every stage.
Callers own the data: ``objective(step)`` draws its own batch (or uses the whole grid) and returns the loss.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from medinr.errors import MedinrError
from medinr.runtime import follow_load
from medinr.training.adam import Adam
from medinr.training.blocks import BlockRecorder, recording

SCHEDULES = ("constant", "cosine", "exponential")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for batch draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_lambda(schedule: str, steps: int, warmup: int = 0, final_fraction: float = 0.05) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each step: 'constant', 'cosine' or 'exponential'."""
    if schedule not in SCHEDULES:
        raise MedinrError(f"unknown learning-rate schedule '{schedule}' ({', '.join(SCHEDULES)})")

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        if schedule == "cosine":
            return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "exponential":
            return final_fraction**t
        return 1.0

    return factor


@runtime_checkable
class Trainable(Protocol):
    """What the loop asks of what it trains (every :class:`~medinr.models.INR` is one)."""

    def param_groups(self, base_lr: float) -> list[dict]: ...

    def training_progress(self, fraction: float) -> bool: ...

    def regularization(self) -> torch.Tensor | None: ...


class Parameters:
    """Plain parameters (or Adam groups) as a :class:`Trainable` with no schedule and no regulariser."""

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict]) -> None:
        items = list(params)
        dicts = [g for g in items if isinstance(g, dict)]
        self.groups = dicts if len(dicts) == len(items) else [{"params": items}]

    def param_groups(self, base_lr: float) -> list[dict]:
        return self.groups

    def training_progress(self, fraction: float) -> bool:
        return False

    def regularization(self) -> torch.Tensor | None:
        return None


class Together:
    """Several trainables fitted by one loss (a forward and an inverse field): their groups, schedules and
    regularisers combined."""

    def __init__(self, parts: Sequence[Trainable]) -> None:
        self.parts = list(parts)

    def param_groups(self, base_lr: float) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups(base_lr)]

    def training_progress(self, fraction: float) -> bool:
        return any([part.training_progress(fraction) for part in self.parts])  # every part is told

    def regularization(self) -> torch.Tensor | None:
        terms = [r for r in (part.regularization() for part in self.parts) if r is not None]
        return sum(terms[1:], terms[0]) if terms else None


@dataclass
class TrainResult:
    """What a fit did: the loss per step, steps run, wall seconds (validation included, and apart), why it
    stopped ('steps', 'patience', 'time budget', 'callback')."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    validation_seconds: float = 0.0
    stopped: str = "steps"
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps if self.steps else 0.0

    def then(self, other: "TrainResult") -> "TrainResult":
        """This stage followed by ``other``: losses joined, steps and seconds added."""
        return TrainResult(self.losses + other.losses, self.steps + other.steps, self.seconds + other.seconds,
                           self.validation_seconds + other.validation_seconds, other.stopped)

    def timing(self) -> dict[str, float]:
        """Seconds, steps and seconds per step of this stage (metrics.json ``timing``)."""
        return {"seconds": self.seconds, "steps": self.steps, "seconds_per_step": self.seconds_per_step,
                "validation_seconds": self.validation_seconds}


@dataclass(frozen=True)
class Schedule:
    """The learning rate's multiplier over the steps: ``kind`` ('cosine', 'constant', 'exponential') laid over
    ``length`` steps (None: the steps the fit runs), after ``warmup`` linear steps. A fit that starts at step
    ``start`` of a longer schedule (a continuation) picks the schedule up there."""

    kind: str = "cosine"
    length: int | None = None
    warmup: int = 0


def _target(target: Trainable | torch.nn.Module | Iterable) -> Trainable:
    if isinstance(target, Trainable):
        return target
    return Parameters(target.parameters() if isinstance(target, torch.nn.Module) else target)


def _optimiser(groups: list[dict], lr: float, previous: Adam | None) -> Adam:
    """Adam on ``groups``; Adam state carried from ``previous`` for the parameters it shares (a rebuilt optimiser
    does not restart the moments of untouched weights)."""
    optimiser = Adam(groups, lr)
    if previous is not None:
        optimiser.carry_state(previous)
    return optimiser


class _Loop:
    """The state of one :func:`fit`: optimiser, schedule, bar, clock; :meth:`run` is the loop."""

    def __init__(self, model: Any, objective: Callable, steps: int, lr: float, schedule: Schedule,
                 start: int, progress_span: tuple[int, int] | None, selection: Any, options: dict) -> None:
        if steps < 1:
            raise MedinrError(f"the number of steps must be at least 1, got {steps}")
        self.model, self.target = model, _target(model)  # validators score (and copy) the model itself
        self.objective, self.steps, self.start = objective, int(steps), int(start)
        self.selection, self.options = selection, options
        length = schedule.length if schedule.length is not None else self.start + self.steps
        self.lr, self.factor = float(lr), lr_lambda(schedule.kind, length, schedule.warmup)
        offset, total = progress_span if progress_span is not None else (0, length)
        self.fraction = lambda step: (offset + step) / max(1, total)
        self.optimiser = _optimiser(self.target.param_groups(self.lr), self.lr, None)
        self.result = TrainResult()

    def _validate(self, step: int, aux: Any, loss: float | None) -> bool:
        """Score the state after ``step`` steps when the selection rule wants it; True: stop (patience)."""
        t0 = time.perf_counter()
        stop = self.selection.observe(step, self.model, aux, loss)
        self.result.validation_seconds += time.perf_counter() - t0
        return stop

    def _before(self, step: int) -> None:
        """The model's training schedule (and a caller's hook): a rebuilt optimiser keeps the Adam state."""
        groups = self.target.param_groups(self.lr) if self.target.training_progress(self.fraction(step)) else None
        hook = self.options.get("before_step")
        groups = (hook(step) if hook is not None else None) or groups
        if groups is not None:
            self.optimiser = _optimiser(groups, self.lr, self.optimiser)

    def _forward(self, step: int) -> tuple[torch.Tensor, Any]:
        """The objective (a loss, or ``(loss, aux)`` for the validator) plus the model's own regulariser."""
        out = self.objective(step)
        loss, aux = out if isinstance(out, tuple) else (out, None)
        reg = self.target.regularization()
        return (loss + reg if reg is not None else loss), aux

    def _update(self, step: int, loss: torch.Tensor, recorder: BlockRecorder | None) -> float:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise MedinrError(
                f"the fit diverged at step {step} (loss is {value}); try a lower learning rate or another model"
            )
        loss.backward()
        self.optimiser.step(self.factor(step), recorder.merged() if recorder is not None else ())
        self.result.losses.append(value)
        return value

    def _step(self, step: int) -> str | None:
        """One step; the reason to stop after it, if any."""
        sel = self.selection
        if sel is not None and not sel.uses_forward and sel.due(step) and self._validate(step, None, None):
            return "patience"
        self._before(step)
        self.optimiser.zero_grad()
        with recording() if self.options.get("block_updates") else nullcontext() as recorder:
            loss, aux = self._forward(step)
        if sel is not None and sel.uses_forward and sel.due(step) and self._validate(step, aux, float(loss.detach())):
            return "patience"
        value = self._update(step, loss, recorder)
        on_step = self.options.get("on_step")
        if on_step is not None and on_step(step, value):
            return "callback"
        return None

    def run(self) -> TrainResult:
        budget, begin = self.options.get("time_budget"), time.perf_counter()
        bar = tqdm(range(self.start, self.start + self.steps), desc=self.options.get("description", "fitting"),
                   disable=not self.options.get("progress", True), dynamic_ncols=True, leave=False)
        step = self.start
        try:
            for step in bar:
                follow_load()  # threads as many as the cores other processes leave free (about once a second)
                stopped = self._step(step)
                if stopped == "patience":
                    break
                step += 1
                if stopped is not None or (budget is not None and time.perf_counter() - begin > budget):
                    self.result.stopped = stopped or "time budget"
                    break
                if step % 10 == 1 and self.result.losses:
                    bar.set_postfix({"loss": f"{self.result.losses[-1]:.3e}"}, refresh=False)
        finally:
            bar.close()
        if self.selection is not None:
            self.result.stopped = "patience" if self.selection.exhausted() else self.result.stopped
            t0 = time.perf_counter()
            self.selection.finish(step, self.model)
            self.result.validation_seconds += time.perf_counter() - t0
        self.result.steps = len(self.result.losses)
        self.result.seconds = time.perf_counter() - begin
        return self.result


def fit(
    target: Trainable | torch.nn.Module | Iterable[torch.nn.Parameter] | Iterable[dict],
    objective: Callable[[int], torch.Tensor | tuple[torch.Tensor, Any]],
    steps: int,
    lr: float = 1e-3,
    schedule: str | Schedule = "cosine",
    *,
    start: int = 0,
    progress_span: tuple[int, int] | None = None,
    selection: Any = None,
    progress: bool = True,
    description: str = "fitting",
    time_budget: float | None = None,
    on_step: Callable[[int, float], bool | None] | None = None,
    before_step: Callable[[int], list[dict] | None] | None = None,
    block_updates: bool = False,
) -> TrainResult:
    """Minimise ``objective`` with Adam: the one training loop.

    Parameters
    ----------
    target : Trainable, module, or iterable of parameters or Adam groups
        What is trained. A :class:`Trainable` (an INR, a velocity field, :class:`Together`) has its parameter
        groups, its training schedule and its regulariser applied by the loop; a plain module or plain
        parameters have none.
    objective : callable
        ``objective(step)`` -> scalar loss tensor, or ``(loss, aux)`` where ``aux`` is what a validator scored
        from the same forward pass needs (k-space residuals).
    steps : int
        Steps to run, from step ``start``.
    lr : float
        Base learning rate (``param_groups`` scale it per part).
    schedule : str or Schedule
        'cosine' (default), 'constant' or 'exponential' over the steps run; a :class:`Schedule` sets its length
        (a continuation picks a longer schedule up at ``start``) and warm-up.
    start : int
        The first step's index (the schedule and the objective see ``start``, ``start + 1``, ...).
    progress_span : (offset, total), optional
        The model's training schedule is told ``(offset + step) / total`` (default: the schedule's fraction).
    selection : BestIterate, optional
        Held-out validation and the best-iterate rule (:class:`medinr.training.selection.BestIterate`): it
        scores the model when due, keeps the best state and stops the fit when its patience runs out.
    progress : bool
        A progress bar with the current loss.
    time_budget : float, optional
        Stop after this many seconds (benchmarks).
    on_step : callable, optional
        ``on_step(step, loss)`` after each step; a true return value stops the fit there.
    before_step : callable, optional
        ``before_step(step)`` before each step; parameter groups it returns rebuild the optimiser (Adam state
        kept for the parameters that survive).
    block_updates : bool
        Each step trains only the blocks of the feature lattices its forward pass reached (lazy Adam; for fits
        in tiles of a large volume, :mod:`medinr.training.blocks`).

    Returns
    -------
    TrainResult

    Raises
    ------
    MedinrError
        If the loss becomes NaN or infinite (one line, naming the step).
    """
    plan = schedule if isinstance(schedule, Schedule) else Schedule(schedule)
    options = {"progress": progress, "description": description, "time_budget": time_budget, "on_step": on_step,
               "before_step": before_step, "block_updates": block_updates}
    return _Loop(target, objective, steps, lr, plan, start, progress_span, selection, options).run()
