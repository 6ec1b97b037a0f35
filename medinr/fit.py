"""The generic fitting loop every pipeline reuses: a loss callback, Adam with a schedule, a progress bar.

Callers own the data: ``loss_fn(step)`` draws its own coordinate batch (or uses the full grid) and
returns a scalar loss. Seeding here makes batch draws and initialisation reproducible.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from medinr.errors import MedinrError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for batch draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_lambda(schedule: str, steps: int, warmup: int = 0, final_fraction: float = 0.05) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each step: 'constant', 'cosine' or 'exponential'."""
    if schedule not in ("constant", "cosine", "exponential"):
        raise MedinrError(f"unknown learning-rate schedule '{schedule}' (constant, cosine, exponential)")

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


def _optimiser(
    params: Iterable, lr: float, weight_decay: float, factor: Callable[[int], float], step: int,
    previous: torch.optim.Optimizer | None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam on ``params`` with the schedule ``factor`` positioned at ``step``; Adam state carried from ``previous``
    for the parameters it shares (a rebuilt optimiser does not restart the moments of untouched weights)."""
    optimiser = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if previous is not None:
        for group in optimiser.param_groups:
            for p in group["params"]:
                if p in previous.state:
                    optimiser.state[p] = previous.state[p]
    for group in optimiser.param_groups:
        group["initial_lr"] = group["lr"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, factor, last_epoch=step - 1)
    return optimiser, scheduler


@dataclass
class FitResult:
    """What a fit did: the loss per step, metric values at the steps they were computed, wall time (s)."""

    losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0


def fit(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float = 1e-3,
    schedule: str = "cosine",
    warmup: int = 0,
    metrics: dict[str, Callable[[], float]] | None = None,
    metric_every: int = 50,
    progress: bool = True,
    description: str = "fitting",
    time_budget: float | None = None,
    weight_decay: float = 0.0,
    on_step: Callable[[int, float], bool | None] | None = None,
    before_step: Callable[[int], list[dict] | None] | None = None,
) -> FitResult:
    """Minimise ``loss_fn`` with Adam.

    Parameters
    ----------
    params : iterable
        Parameters or Adam parameter groups (e.g. a higher learning rate for a hash table).
    loss_fn : callable
        ``loss_fn(step) -> scalar tensor``; it draws its own batch.
    steps : int
        Number of optimisation steps (the schedule is laid over them).
    lr : float
        Base learning rate of groups that set none.
    schedule : {'cosine', 'exponential', 'constant'}
    warmup : int
        Linear warm-up steps.
    metrics : dict of callables, optional
        Evaluated every ``metric_every`` steps and at the end (e.g. PSNR against a reference); shown in the bar.
    progress : bool
        Show a tqdm progress bar with the current loss.
    time_budget : float, optional
        Stop after this many seconds of wall time (benchmarks).
    on_step : callable, optional
        ``on_step(step, loss)`` after each step (e.g. validation bookkeeping); a true return value stops the fit
        there (early stopping).
    before_step : callable, optional
        ``before_step(step)`` before each step; when it returns parameter groups (a model replaced parameters,
        e.g. KAN grid extension) the optimiser is rebuilt on them, keeping the Adam state of every parameter
        that survived and the learning-rate schedule's position.

    Returns
    -------
    FitResult

    Raises
    ------
    MedinrError
        If the loss becomes NaN or infinite.
    """
    if steps < 1:
        raise MedinrError(f"the number of steps must be at least 1, got {steps}")
    factor = lr_lambda(schedule, steps, warmup)
    optimiser, scheduler = _optimiser(params, lr, weight_decay, factor, 0, None)
    result = FitResult(metrics={name: [] for name in (metrics or {})})
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=description, disable=not progress, dynamic_ncols=True, leave=False)
    postfix: dict[str, str] = {}
    for step in bar:
        groups = before_step(step) if before_step is not None else None
        if groups is not None:
            optimiser, scheduler = _optimiser(groups, lr, weight_decay, factor, step, optimiser)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            raise MedinrError(
                f"the fit diverged at step {step} (loss is {value}); try a lower learning rate or another model"
            )
        loss.backward()
        optimiser.step()
        scheduler.step()
        result.losses.append(value)
        result.steps = step + 1
        stop = bool(on_step(step, value)) if on_step is not None else False
        last = step == steps - 1 or stop
        over_budget = time_budget is not None and time.perf_counter() - start > time_budget
        if metrics and (step % metric_every == 0 or last or over_budget):
            for name, fn in metrics.items():
                m = float(fn())
                result.metrics[name].append((step + 1, m))
                postfix[name] = f"{m:.3g}"
        if progress and (step % 10 == 0 or last):
            postfix["loss"] = f"{value:.3e}"
            bar.set_postfix(postfix, refresh=False)
        if over_budget or stop:
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    return result
