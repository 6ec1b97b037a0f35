"""The training engine (medinr/training): the one loop, its model hooks, the validators, the best-iterate rule,
the final stage, and the one hold-out rule (medinr/splits.py)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from medinr.errors import MedinrError
from medinr.models import build_model
from medinr.splits import split_units
from medinr.training import (
    BestIterate,
    FinalStage,
    HeldOutSamples,
    Schedule,
    fit,
    fit_with_holdout,
    held_out_residual,
    lr_lambda,
    seed_everything,
)


# ---- fit(): schedule, NaN guard, time budget, parameter groups, seeding, hooks -------------------------------
def test_cosine_schedule_runs_from_one_to_the_final_fraction() -> None:
    f = lr_lambda("cosine", steps=100, final_fraction=0.05)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.05 + 0.95 * 0.5)
    assert f(100) == pytest.approx(0.05)
    assert all(f(s) >= f(s + 1) for s in range(100))
    warm = lr_lambda("constant", steps=100, warmup=10)
    assert [warm(s) for s in (0, 4, 9, 10, 99)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0])
    assert lr_lambda("exponential", 10, final_fraction=0.01)(10) == pytest.approx(0.01)
    with pytest.raises(MedinrError, match="schedule"):
        lr_lambda("linear", 10)


def test_fit_respects_parameter_groups_and_the_schedule() -> None:
    """Adam's first step moves each parameter by about its group's rate; the schedule scales later steps."""
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))

    def loss_fn(step: int) -> torch.Tensor:
        return -(a + b).sum()  # constant gradient: every Adam step is about lr

    result = fit([{"params": [a], "lr": 0.01}, {"params": [b]}], loss_fn, steps=1, lr=0.1, progress=False)
    assert result.steps == 1 and len(result.losses) == 1
    assert a.item() == pytest.approx(0.01, rel=1e-3) and b.item() == pytest.approx(0.1, rel=1e-3)
    c = torch.nn.Parameter(torch.zeros(1))
    fit([c], lambda step: -c.sum(), steps=4, lr=1.0, schedule="exponential", progress=False)
    # factors 1, 0.05^(1/4), 0.05^(2/4), 0.05^(3/4) (final_fraction 0.05 reached after the last step)
    assert c.item() == pytest.approx(sum(0.05 ** (k / 4) for k in range(4)), rel=1e-3)


def test_a_continuation_picks_a_longer_schedule_up_at_its_start() -> None:
    """steps 0..3 then 4..7 of one 8-step schedule move a parameter as the 8 steps in one go."""
    whole, parts = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    fit([whole], lambda s: -whole.sum(), 8, 1.0, "cosine", progress=False)
    plan = Schedule("cosine", length=8)
    fit([parts], lambda s: -parts.sum(), 4, 1.0, plan, progress=False)
    fit([parts], lambda s: -parts.sum(), 4, 1.0, plan, start=4, progress=False)
    # Adam's first step after a restart is again about lr: the same sum of factors, each ~1 x factor
    expected = sum(lr_lambda("cosine", 8)(k) for k in range(8))
    assert whole.item() == pytest.approx(expected, rel=1e-3) and parts.item() == pytest.approx(expected, rel=1e-3)


def test_fit_stops_with_a_clear_error_when_the_loss_is_not_finite() -> None:
    p = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(MedinrError, match="diverged at step 3"):
        fit([p], lambda step: p.sum() * (math.nan if step == 3 else 1.0), steps=10, progress=False)
    with pytest.raises(MedinrError, match="at least 1"):
        fit([p], lambda step: p.sum(), steps=0, progress=False)


def test_time_budget_ends_the_fit_early() -> None:
    p = torch.nn.Parameter(torch.ones(1))

    def slow(step: int) -> torch.Tensor:
        time.sleep(0.02)
        return p.square().sum()

    result = fit([p], slow, steps=10_000, time_budget=0.1, progress=False)
    assert 1 <= result.steps < 100 and result.stopped == "time budget"
    assert result.timing()["steps"] == result.steps and result.seconds_per_step > 0


def test_on_step_can_stop_and_before_step_rebuilds_the_optimiser_keeping_state() -> None:
    w = torch.nn.Parameter(torch.zeros(3))
    extra = torch.nn.Parameter(torch.zeros(1))
    params = {"groups": [{"params": [w]}]}

    def before(step: int):
        if step == 5:  # a new parameter appears (as after KAN grid extension): rebuild with it
            params["groups"] = [{"params": [w]}, {"params": [extra]}]
            return params["groups"]
        return None

    def loss_fn(step: int) -> torch.Tensor:
        return (w - 1).square().sum() + (extra - 2).square().sum()

    result = fit(params["groups"], loss_fn, steps=50, lr=0.1, progress=False, before_step=before,
                 on_step=lambda step, loss: step == 29)
    assert result.steps == 30 and result.stopped == "callback"
    assert extra.item() > 0.5  # trained after the rebuild
    assert torch.allclose(w, torch.ones(3), atol=0.2)


@pytest.mark.parametrize("fused", [True, False])
def test_the_loops_adam_is_torchs_adam_to_the_bit_with_groups_schedule_and_a_rebuild(monkeypatch, fused) -> None:
    """fit() updates as torch.optim.Adam + LambdaLR do (defaults), including a mid-fit rebuild that carries the
    moments: through torch's fused kernel as Adam(fused=True) does, and step by step (a tensor the kernel does not
    take) as its single-tensor path does."""
    import medinr.training.adam as adam

    if not fused:
        monkeypatch.setattr(adam, "fusable", lambda p: False)
    torch.manual_seed(3)
    init = [torch.randn(5, 4), torch.randn(4), torch.randn(3)]
    target = torch.randn(7, 5)
    x = torch.randn(7, 4)

    def loss_of(w, b, c):
        return ((x @ w.T + b.sum() - target) ** 2).mean() + (c**3).sum() * 1e-2

    ours = [torch.nn.Parameter(t.clone()) for t in init]
    theirs = [torch.nn.Parameter(t.clone()) for t in init]
    factor = lr_lambda("cosine", 40)

    def rebuild(step: int):
        return [{"params": ours[:2], "lr": 0.03}, {"params": ours[2:], "lr": 0.2}] if step == 15 else None

    fit([{"params": ours[:2], "lr": 0.03}, {"params": ours[2:]}], lambda s: loss_of(*ours), steps=40, lr=0.1,
        schedule="cosine", progress=False, before_step=rebuild)

    path = {"fused": True} if fused else {"foreach": False}
    groups = [{"params": theirs[:2], "lr": 0.03}, {"params": theirs[2:], "lr": 0.1}]
    optimiser = torch.optim.Adam(groups, lr=0.1, **path)
    for step in range(40):
        if step == 15:
            old = optimiser
            optimiser = torch.optim.Adam([{"params": theirs[:2], "lr": 0.03}, {"params": theirs[2:], "lr": 0.2}],
                                         **path)
            for p in theirs:
                optimiser.state[p] = old.state[p]
        for group, base in zip(optimiser.param_groups, (0.03, 0.1 if step < 15 else 0.2)):
            group["lr"] = base * factor(step)
        optimiser.zero_grad()
        loss_of(*theirs).backward()
        optimiser.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a.detach(), b.detach())


def test_a_fit_does_not_import_the_compiler() -> None:
    """torch.optim's first use imports torch._dynamo (1.5 s of every command on 2 cores); the loop avoids it."""
    code = ("import sys, torch\n"
            "from medinr.training import fit\n"
            "p = torch.nn.Parameter(torch.ones(2))\n"
            "fit([p], lambda s: (p ** 2).sum(), steps=3, progress=False)\n"
            "print('torch._dynamo' in sys.modules)")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_seed_everything_makes_initialisation_and_draws_repeat() -> None:
    g1 = seed_everything(5)
    a = build_model("siren", 2, 1, hidden=8, layers=1)
    d1 = torch.randint(0, 100, (10,), generator=g1)
    g2 = seed_everything(5)
    b = build_model("siren", 2, 1, hidden=8, layers=1)
    d2 = torch.randint(0, 100, (10,), generator=g2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(d1, d2)
    seed_everything(6)
    c = build_model("siren", 2, 1, hidden=8, layers=1)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


class _Toy:
    """A trainable whose schedule swaps in a new parameter at half of the steps and whose regulariser is known."""

    def __init__(self, penalty: float = 0.0) -> None:
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.penalty, self.fractions, self.swapped = penalty, [], None

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.w], "lr": lr}]

    def training_progress(self, fraction: float) -> bool:
        self.fractions.append(fraction)
        if fraction >= 0.5 and self.swapped is None:
            self.swapped = self.w
            self.w = torch.nn.Parameter(self.w.detach().clone())  # replaced, as a KAN's grid extension does
            return True
        return False

    def regularization(self) -> torch.Tensor | None:
        return self.penalty * self.w.square().sum() if self.penalty else None


def test_the_loop_owns_the_schedule_and_the_regulariser_of_what_it_trains() -> None:
    toy = _Toy(penalty=10.0)
    result = fit(toy, lambda step: (toy.w - 1).square().sum(), 20, 0.05, "constant", progress=False)
    assert toy.fractions == [s / 20 for s in range(20)]  # told before every step, fraction of the schedule
    assert toy.swapped is not None and float(toy.w[0].detach()) > 0.05  # the new parameter trained (a new Adam)
    assert not torch.equal(toy.swapped, toy.w)
    # the regulariser entered the loss: the recorded first loss is |w-1|^2 + 10 |w|^2 at w = 0, and the minimum
    # of the sum is w = 1/11, not 1
    assert result.losses[0] == pytest.approx(2.0)
    long = _Toy(penalty=10.0)
    fit(long, lambda step: (long.w - 1).square().sum(), 400, 0.02, "constant", progress=False)
    assert torch.allclose(long.w, torch.full((2,), 1 / 11), atol=0.02)
    # the span: a later part of a longer schedule is told its place in the whole
    part = _Toy()
    fit(part, lambda step: part.w.sum(), 2, 0.1, progress=False, progress_span=(6, 10))
    assert part.fractions == [0.6, 0.7]


# ---- the best-iterate rule ----------------------------------------------------------------------------------
class _Listed:
    """A validator that returns a fixed sequence of errors, one per evaluation."""

    uses_forward = False

    def __init__(self, errors, every: int = 1, warmup: int = 0) -> None:
        self.errors, self.every, self.warmup, self.calls = list(errors), every, warmup, []

    def error(self, model, step, aux=None) -> float:
        self.calls.append(step)
        return self.errors[len(self.calls) - 1]


def test_best_iterate_keeps_the_lowest_and_stops_after_patience_without_gain() -> None:
    rule = BestIterate(_Listed([5.0, 3.0, 4.0, 2.0, 2.5, 2.6, 2.7]), patience=3)
    model = torch.nn.Linear(1, 1)
    stops = []
    for step, _ in enumerate(rule.validator.errors):
        with torch.no_grad():
            model.bias.fill_(step)
        stops.append(rule.observe(step, model))
    assert rule.best_step == 3 and rule.best_error == 2.0 and float(rule.best_model.bias) == 3.0  # a copy
    assert stops == [False] * 6 + [True]  # three evaluations after the best without a gain
    # min_gain: an improvement below it becomes the best state but does not reset the patience
    slight = BestIterate(_Listed([1.0, 0.999, 0.998, 0.997]), patience=3, min_gain=0.01)
    assert [slight.observe(s, model) for s in range(4)] == [False, False, False, True]
    assert slight.best_step == 3


def test_patience_after_the_first_gain_waits_out_the_starting_plateau() -> None:
    """A fit whose held-out error stays at (or above) its first value for longer than the patience is not stopped
    on that plateau; once an error gains on the first by min_gain, the patience counts as before."""
    model = torch.nn.Linear(1, 1)
    errors = [1.0, 1.001, 1.0, 0.9995, 1.002, 0.8, 0.6, 0.65, 0.66, 0.67]
    plain = BestIterate(_Listed(errors), patience=3, min_gain=0.01)
    assert [plain.observe(s, model) for s in range(4)] == [False, False, False, True]  # stopped on the plateau
    waiting = BestIterate(_Listed(errors), patience=3, min_gain=0.01, after_first_gain=True)
    stops = [waiting.observe(s, model) for s in range(len(errors))]
    assert stops == [False] * 9 + [True] and waiting.best_step == 6


def test_tolerance_keeps_the_latest_state_within_the_band_and_walks_on_inside_it() -> None:
    """With a band of 0.01 over the lowest error, a flat held-out curve keeps its latest state, the patience
    counts only evaluations outside the band, and a new lowest error moves the band down; the band does not
    grow with the error."""
    model = torch.nn.Linear(1, 1)
    flat = [1.000, 1.004, 1.008, 1.009, 1.02, 1.03, 1.04]
    rule = BestIterate(_Listed(flat), patience=3, tolerance=0.01)
    assert [rule.observe(s, model) for s in range(len(flat))] == [False] * 6 + [True]
    assert rule.best_step == 3 and rule.lowest == 1.0 and rule.best_error == 1.009
    without = BestIterate(_Listed(flat), patience=3)  # the plain rule: the lowest, stopped three evaluations on
    assert [without.observe(s, model) for s in range(4)] == [False, False, False, True] and without.best_step == 0
    narrowing = BestIterate(_Listed([1.0, 0.90, 0.905, 0.95, 0.96, 0.97]), patience=3, tolerance=0.01)
    assert [narrowing.observe(s, model) for s in range(6)] == [False] * 5 + [True]
    assert narrowing.best_step == 2 and narrowing.lowest == 0.90  # 0.905 is within 0.01 of 0.90, 0.95 is not
    large = BestIterate(_Listed([50.0, 50.2, 50.4, 50.6]), patience=3, tolerance=0.01)  # 0.4 % above: outside
    assert [large.observe(s, model) for s in range(4)] == [False, False, False, True] and large.best_step == 0



def test_warm_up_cadence_and_the_last_state_is_a_candidate() -> None:
    rule = BestIterate(_Listed([9.0, 8.0, 7.0, 1.0], every=5, warmup=10), patience=10)
    assert [s for s in range(26) if rule.due(s)] == [10, 15, 20, 25]
    p = torch.nn.Parameter(torch.zeros(1))
    result = fit([p], lambda step: p.sum(), 23, 0.1, progress=False, selection=rule)
    assert rule.validator.calls == [10, 15, 20, 23] and rule.best_step == 23  # the end, scored by finish()
    assert result.steps == 23 and result.validation_seconds >= 0


def test_the_fit_stops_when_patience_runs_out() -> None:
    rule = BestIterate(_Listed([3.0, 2.0, 2.5, 2.5, 2.5, 2.5], every=2), patience=2)
    p = torch.nn.Parameter(torch.zeros(1))
    result = fit([p], lambda step: p.sum(), 100, 0.1, progress=False, selection=rule)
    assert rule.validator.calls == [0, 2, 4, 6] and result.steps == 6 and result.stopped == "patience"
    assert rule.best_step == 2


def test_held_out_samples_score_the_forward_residual_or_the_model_alike() -> None:
    g = torch.Generator().manual_seed(0)
    resid = torch.complex(torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g))
    held = torch.zeros(8, 8, dtype=torch.bool)
    held[:, 2] = True
    manual = float((resid.abs() ** 2)[:, held].mean())
    assert float(held_out_residual(resid, held)) == pytest.approx(manual, rel=1e-6)
    validator = HeldOutSamples(held, every=1, warmup=0, residual=lambda model, step: resid * model)
    assert validator.error(1.0, 0, resid) == pytest.approx(manual, rel=1e-6)  # from the forward pass
    assert validator.error(2.0, 0) == pytest.approx(4 * manual, rel=1e-6)  # standalone, for the last state


# ---- the final stage ----------------------------------------------------------------------------------------
def _toy_problem():
    """A line fitted to points; 'walk' fits the even points, the others every point."""
    x = torch.linspace(-1, 1, 20)
    y = 0.7 * x + 0.2 + 0.05 * torch.sin(9 * x)

    def objective_for(model, stage):
        idx = slice(0, None, 2) if stage == "walk" else slice(None)
        return lambda step: (model(x[idx, None])[:, 0] - y[idx]).square().mean()

    held = slice(1, None, 2)

    class Held:
        uses_forward, every, warmup = False, 5, 5

        def error(self, model, step, aux=None) -> float:
            with torch.no_grad():
                return float((model(x[held, None])[:, 0] - y[held]).square().mean())

    return objective_for, Held()


@pytest.mark.parametrize("kind", ["refit", "finetune", "split"])
def test_each_final_stage_does_what_it_says(kind) -> None:
    objective_for, held = _toy_problem()
    torch.manual_seed(0)
    start = torch.nn.Linear(1, 1)
    first = {k: v.clone() for k, v in start.state_dict().items()}
    rule = BestIterate(held, patience=4)
    final = FinalStage(kind, fraction=0.5)
    out = fit_with_holdout(start, objective_for, 60, 0.05, Schedule("cosine", length=60), rule, final,
                           progress=False)
    chosen = rule.best_step
    assert chosen >= 5 and out.walk.steps >= chosen
    if kind == "split":
        assert out.final is None and torch.equal(out.model.weight, rule.best_model.weight)
    elif kind == "refit":
        # the same as fitting every point from the start for the chosen steps along the walk's schedule
        again = torch.nn.Linear(1, 1)
        again.load_state_dict(first)
        fit(again, objective_for(again, "refit"), chosen, 0.05, Schedule("cosine", length=60), progress=False)
        assert out.final.steps == chosen and torch.equal(out.model.weight, again.weight)
    else:
        assert out.final.steps == max(1, round(0.5 * chosen)) and out.model is rule.best_model
    assert out.history.steps == out.walk.steps + (out.final.steps if out.final else 0)
    with pytest.raises(MedinrError, match="final stage"):
        FinalStage("nonsense")


def test_a_stretched_refit_walks_the_schedule_slower_to_the_chosen_point() -> None:
    """stretch s: s x the chosen steps; step k sees the objective's step k / s and the learning-rate factor of the
    walk's schedule there, so the refit ends where the walk chose; a stretch below 1 is refused."""
    objective_for, held = _toy_problem()
    seen: list[float] = []

    def recording(model, stage):
        inner = objective_for(model, stage)
        return inner if stage == "walk" else lambda step: (seen.append(step), inner(step))[1]

    torch.manual_seed(0)
    start = torch.nn.Linear(1, 1)
    rule = BestIterate(held, patience=4)
    out = fit_with_holdout(start, recording, 60, 0.05, Schedule("cosine", length=60), rule,
                           FinalStage("refit", stretch=2.0), progress=False)
    chosen = rule.best_step
    assert out.final.steps == 2 * chosen and len(seen) == 2 * chosen
    assert seen[:3] == [0.0, 0.5, 1.0] and seen[-1] == pytest.approx(chosen - 0.5)
    assert "2x slower" in out.description
    # the same as a plain fit of 2 x chosen steps over a schedule twice as long, objective at half the step
    torch.manual_seed(0)
    again = torch.nn.Linear(1, 1)
    inner = objective_for(again, "refit")
    fit(again, lambda step: inner(step / 2.0), 2 * chosen, 0.05, Schedule("cosine", length=120), progress=False)
    assert torch.equal(out.model.weight, again.weight)
    assert FinalStage.of("refit", stretch=1.5).stretch == 1.5 and FinalStage.of({"kind": "split"}).stretch == 1.0
    with pytest.raises(MedinrError, match="stretch"):
        FinalStage("refit", stretch=0.5)


# ---- the one hold-out rule ----------------------------------------------------------------------------------
def test_split_units_draws_from_the_candidates_only_and_repeats() -> None:
    available = np.ones(40, bool)
    available[:5] = False
    protected = np.zeros(40, bool)
    protected[18:22] = True
    held = split_units(available, 0.25, seed=3, protected=protected, seed_offset=11)
    candidates = available & ~protected
    assert held.sum() == round(0.25 * candidates.sum()) and not (held & ~candidates).any()
    assert np.array_equal(held, split_units(available, 0.25, 3, protected=protected, seed_offset=11))
    assert not np.array_equal(held, split_units(available, 0.25, 4, protected=protected, seed_offset=11))
    fold = split_units(available, 0.25, 3, protected=protected, seed_offset=11, fold=1)
    assert not (fold & held).any()  # folds of one seed are disjoint
    assert split_units(np.ones(40, bool), 0.01, 0, min_units=3).sum() == 3  # at least min_units
    assert split_units(np.ones(8, bool), 0.01, 0, min_units=3).sum() == 2  # ... or a quarter of the candidates
    assert not split_units(available, 0.0, 3).any()
    with pytest.raises(MedinrError, match="leaves none to fit"):
        split_units(np.ones(1, bool), 0.5, 0)
    with pytest.raises(MedinrError, match="held-out fraction"):
        split_units(available, 1.0, 0)


# ---- block updates (medinr/training/blocks.py): a tile's step trains the block of the grids it reached ----------
def _tile_forward(grid: torch.Tensor, ranges) -> torch.Tensor:
    from medinr.models.separable import interpolate_axes

    axes = [torch.linspace(lo, hi, 6, dtype=grid.dtype) for lo, hi in ranges]
    weights = torch.linspace(-1.0, 2.0, grid.shape[0] * 6 ** len(axes), dtype=grid.dtype)
    return (interpolate_axes(grid, axes).reshape(-1) * weights).sum()


def test_a_recorded_step_leaves_the_blocks_gradient_and_none_on_the_grid() -> None:
    """Inside recording(), the narrowing hands out a block leaf: the parameter gets no gradient, the block the
    dense gradient's non-zero part; a parameter taken twice gets the box of both and the sum of both gradients."""
    from medinr.training.blocks import recording

    gen = torch.Generator().manual_seed(0)
    values = torch.randn(2, 20, 17, 12, generator=gen, dtype=torch.float64)
    dense, blocked = (torch.nn.Parameter(values.clone()) for _ in range(2))
    tiles = [((-0.6, -0.2), (0.1, 0.5), (-1.0, 1.0)), ((-0.3, 0.1), (0.3, 0.9), (-0.2, 0.2))]
    sum(_tile_forward(dense, r) for r in tiles).backward()
    with recording() as recorder:
        loss = sum(_tile_forward(blocked, r) for r in tiles)
    loss.backward()
    assert blocked.grad is None and len(recorder.blocks) == 2
    ((param, box, grad),) = recorder.merged()
    assert param is blocked
    torch.testing.assert_close(grad, dense.grad[box], rtol=1e-12, atol=1e-12)
    outside = dense.grad.clone()
    outside[box] = 0
    assert outside.abs().max() == 0 and dense.grad[box].abs().sum() > 0
    # cells reached: (x + 1) (n - 1) / 2 over -0.6..0.1 on 20 nodes is 3.8..10.5, over 0.1..0.9 on 17 nodes 8.8..15.2
    assert box == (slice(0, 2), slice(3, 12), slice(8, 17), slice(0, 12))
    # outside recording, and for a plain tensor, the narrowing is a view of the grid, as before
    with recording() as recorder:
        _tile_forward(values.clone().requires_grad_(), tiles[0]).backward()
    assert recorder.blocks == []


def test_adam_steps_a_block_alone_without_the_first_moment() -> None:
    from medinr.training.adam import BETAS, EPS, Adam

    p = torch.nn.Parameter(torch.zeros(1, 6, 5))
    other = torch.nn.Parameter(torch.zeros(3))
    opt = Adam([p, other], lr=0.1)
    box = (slice(None), slice(1, 3), slice(2, 5))
    grads = [torch.full((1, 2, 3), 2.0), torch.full((1, 2, 3), -1.0)]
    v = torch.zeros(1, 2, 3)
    expected = torch.zeros(1, 2, 3)
    for step, g in enumerate(grads, 1):
        other.grad = torch.ones(3)
        opt.step(blocks=[(p, box, g)])
        v = BETAS[1] * v + (1 - BETAS[1]) * g * g
        expected -= 0.1 * g / ((v / (1 - BETAS[1] ** step)).sqrt() + EPS)
    torch.testing.assert_close(p.detach()[box], expected)
    untouched = p.detach().clone()
    untouched[box] = 0
    assert untouched.abs().max() == 0
    assert "exp_avg" not in opt.state[p] and opt.state[p]["step"] == 2
    assert other.detach()[0] < -0.15  # the dense parameter stepped as Adam does, alongside


def test_a_volume_in_tiles_fits_as_well_by_blocks_as_with_dense_adam(monkeypatch) -> None:
    """A volume fitted in tiles (lazy block updates, the default) reaches the held-out and on-grid PSNR of the same
    fit with dense Adam over every grid node."""
    from medinr import image_fit
    from medinr.geometry import Geometry

    gen = np.random.default_rng(3)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij")
    volume = (np.sin(3 * x) * np.cos(2 * y) + (x * x + y * y + z * z < 0.5) + 0.02 * gen.standard_normal(x.shape))
    kwargs = dict(model="mrgrid", steps=240, progress=False, batch_size=4096, seed=1,
                  model_options={"max_resolution": 24, "base_resolution": 8})
    blocks = image_fit.fit_image(volume.astype(np.float32), Geometry(volume.shape), **kwargs)
    assert blocks.extra["fit"]["batch"] == "tiles"
    monkeypatch.setattr(image_fit._Run, "by_blocks", lambda self, model: False)
    dense = image_fit.fit_image(volume.astype(np.float32), Geometry(volume.shape), **kwargs)
    for key in ("holdout_psnr", "train_psnr"):
        assert blocks.extra["fit"][key] > 19.0  # 20.4 and 24.4 dB (dense Adam: 19.8 and 23.3)
        assert blocks.extra["fit"][key] > dense.extra["fit"][key] - 1.0, key
