"""The fitting loop (medinr/fit.py) and image fitting with held-out voxels (medinr/image_fit.py, medinr/voxels.py)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from medinr.errors import MedinrError
from medinr.fit import fit, lr_lambda, seed_everything
from medinr.geometry import Geometry
from medinr.image_fit import _Run, fit_image
from medinr.models import build_model
from medinr.voxels import VoxelData, footprint_mean, footprint_offsets, holdout_split


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
    assert 1 <= result.steps < 100


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
    assert result.steps == 30
    assert extra.item() > 0.5  # trained after the rebuild
    assert torch.allclose(w, torch.ones(3), atol=0.2)


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


# ---- voxel data: footprint and held-out split ----------------------------------------------------------------
def test_footprint_offsets_are_the_midpoints_of_the_voxel_parts() -> None:
    off = footprint_offsets((5, 9), 2)  # voxel size in network units: 2/4 and 2/8
    assert off.shape == (4, 2)
    assert sorted(set(off[:, 0].tolist())) == pytest.approx([-0.125, 0.125])
    assert sorted(set(off[:, 1].tolist())) == pytest.approx([-0.0625, 0.0625])
    assert torch.allclose(off.mean(0), torch.zeros(2))
    assert footprint_offsets((4, 4, 4), 1).abs().max() == 0
    # the mean over the footprint of a linear function is its value at the centre; of x^2 it adds the box variance
    centre = torch.tensor([[0.3, -0.2]])
    quad = footprint_mean(lambda x: (x[:, :1] ** 2), centre, footprint_offsets((5, 9), 4))
    assert float(quad) > 0.09 and float(quad) < 0.09 + 0.5**2 / 12 + 1e-6


def test_holdout_split_is_disjoint_covers_and_repeats() -> None:
    known = np.ones((20, 30), dtype=bool)
    known[:5] = False
    fit_idx, held = holdout_split(known, 0.1, seed=3)
    assert len(held) == round(0.1 * known.sum()) and not set(fit_idx) & set(held)
    assert sorted(set(fit_idx) | set(held)) == sorted(np.flatnonzero(known))
    again = holdout_split(known, 0.1, seed=3)
    assert np.array_equal(again[1], held) and not np.array_equal(holdout_split(known, 0.1, seed=4)[1], held)
    assert holdout_split(known, 0.0, seed=0)[1].size == 0
    with pytest.raises(MedinrError, match="held-out fraction"):
        holdout_split(known, 1.0, 0)


def test_held_out_voxels_never_enter_the_loss() -> None:
    """The gradient of many training losses with respect to the voxel values is zero at every held-out voxel."""
    torch.manual_seed(0)
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    data = VoxelData.from_image(image, Geometry((16, 16)), footprint=2, holdout=0.25, seed=1)
    data.target.requires_grad_(True)
    model = build_model("siren", 2, 1, hidden=8, layers=1)
    run = _Run(data, batch_size=64 * 4, generator=torch.Generator().manual_seed(0), peak=1.0, progress=False,
               description="test")
    loss = run.loss_fn(model, data.fit)
    for step in range(60):
        loss(step).backward()
    grad = data.target.grad[:, 0].abs()
    assert float(grad[data.held].max()) == 0.0
    assert int((grad[data.fit] > 0).sum()) > 0.9 * data.fit.numel()  # batches covered nearly every fit voxel


def test_unknown_voxels_change_nothing(coronal_64: np.ndarray) -> None:
    """Voxels outside ``known`` are neither fitted nor scored: their values do not matter."""
    image = coronal_64[:32, :32].copy()
    known = np.ones(image.shape, dtype=bool)
    known[::3, ::2] = False
    other = image.copy()
    other[~known] = 50.0
    runs = [fit_image(im, Geometry(im.shape), "mrgrid", steps=20, progress=False, known=known,
                      model_options={"levels": 2, "max_resolution": 32, "hidden": 8}) for im in (image, other)]
    assert runs[0].history.losses == runs[1].history.losses
    assert runs[0].extra["fit"]["holdout_psnr"] == runs[1].extra["fit"]["holdout_psnr"]


def test_fit_image_reports_and_chooses_by_held_out_voxels(coronal_64: np.ndarray) -> None:
    image = coronal_64[:32, :32]
    fitted = fit_image(image, Geometry(image.shape), "mrgrid", steps=60, progress=False,
                       model_options={"levels": 2, "max_resolution": 32, "hidden": 8})
    info = fitted.extra["fit"]
    assert info["holdout_fraction"] == 0.1 and info["footprint"] == 2
    curve = dict(info["holdout_curve"])
    assert info["chosen_step"] in curve and curve[info["chosen_step"]] == max(curve.values())
    assert info["holdout_psnr"] == pytest.approx(max(curve.values()))
    assert info["refine_steps"] >= 1
    assert info["final_steps"] == info["chosen_step"] + info["refine_steps"]
    assert math.isfinite(info["train_psnr"]) and info["train_psnr"] > 15
    assert fitted.history.metrics["holdout_psnr"] == [tuple(c) for c in info["holdout_curve"]]
    plain = fit_image(image, Geometry(image.shape), "mrgrid", steps=30, progress=False, holdout=0.0,
                      model_options={"levels": 2, "max_resolution": 32, "hidden": 8})
    assert plain.extra["fit"]["holdout_psnr"] is None and plain.history.steps == 30
