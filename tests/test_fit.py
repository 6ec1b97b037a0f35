"""Image fitting with held-out voxels (medinr/image_fit.py, medinr/voxels.py); the loop itself is test_training.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.image_fit import _Run, fit_image
from medinr.models import build_model
from medinr.voxels import (
    SPLIT_SEED_OFFSET,
    VoxelData,
    footprint_mean,
    footprint_offsets,
    paired_footprint_mean,
    voxel_holdout,
)


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


def test_an_antithetic_pair_gives_the_box_mean_of_linear_and_quadratic_functions() -> None:
    """Each voxel's pair ``c +- u`` (``u`` uniform in its box) is exact for a linear function whatever ``u``, and
    its mean over draws is the box mean of a quadratic one (the midpoint rule's value with many parts); an axis of
    one voxel gets no spread, and every point lies in its voxel's box."""
    data = VoxelData.from_image(np.zeros((5, 9, 1), np.float32), Geometry((5, 9, 1)), footprint=2)
    assert data.half_width.tolist() == pytest.approx([0.25, 0.125, 0.0])
    centres = torch.tensor([[0.3, -0.2, 0.0], [-0.5, 0.75, 0.0]])
    generator = torch.Generator().manual_seed(0)
    seen: list[torch.Tensor] = []

    def linear(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x @ torch.tensor([[2.0], [-3.0], [5.0]]) + 1.0

    assert torch.allclose(paired_footprint_mean(linear, centres, data.half_width, generator), linear(centres))
    points = seen[0].reshape(2, 2, 3)
    assert torch.all((points - centres).abs() <= data.half_width + 1e-7)
    assert torch.all(points[..., 2] == 0) and not torch.allclose(points[0], points[1])

    def quadratic(x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] ** 2) * 3.0 + x[:, 1:2] * x[:, :1] - x[:, 1:2] ** 2

    many = centres.repeat(20000, 1)
    drawn = paired_footprint_mean(quadratic, many, data.half_width, generator).reshape(20000, 2).mean(0)
    box = footprint_mean(quadratic, centres, footprint_offsets((5, 9, 1), 64))[:, 0]
    assert torch.allclose(drawn, box, atol=2e-3)
    assert not torch.allclose(quadratic(centres)[:, 0], box, atol=2e-3)  # the box mean is not the centre's value


def test_voxel_holdout_is_disjoint_covers_and_repeats() -> None:
    known = np.ones((20, 30), dtype=bool)
    known[:5] = False
    fit_idx, held = voxel_holdout(known, 0.1, seed=3)
    assert len(held) == round(0.1 * known.sum()) and not set(fit_idx) & set(held)
    assert sorted(set(fit_idx) | set(held)) == sorted(np.flatnonzero(known))
    again = voxel_holdout(known, 0.1, seed=3)
    assert np.array_equal(again[1], held) and not np.array_equal(voxel_holdout(known, 0.1, seed=4)[1], held)
    assert voxel_holdout(known, 0.0, seed=0)[1].size == 0
    with pytest.raises(MedinrError, match="held-out fraction"):
        voxel_holdout(known, 1.0, 0)


def test_voxel_holdout_keeps_the_split_of_earlier_versions() -> None:
    """The one hold-out rule draws the same voxels as the image fit's own rule did (benchmark figures stay)."""
    known = np.random.default_rng(1).random((17, 23)) > 0.2
    for seed, fraction in ((0, 0.1), (7, 0.3)):
        index = np.flatnonzero(known)
        n_held = max(1, int(round(fraction * index.size)))
        order = np.random.default_rng(seed + SPLIT_SEED_OFFSET).permutation(index.size)
        fit_idx, held = voxel_holdout(known, fraction, seed)
        assert np.array_equal(held, np.sort(index[order[:n_held]]))
        assert np.array_equal(fit_idx, np.sort(index[order[n_held:]]))


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
    assert info["final_stage"] == "finetune" and set(fitted.history.stages) == {"main", "final"}
    assert fitted.history.steps == fitted.history.stages["main"]["steps"] + info["refine_steps"]
    plain = fit_image(image, Geometry(image.shape), "mrgrid", steps=30, progress=False, holdout=0.0,
                      model_options={"levels": 2, "max_resolution": 32, "hidden": 8})
    assert plain.extra["fit"]["holdout_psnr"] is None and plain.history.steps == 30


@pytest.mark.parametrize("shape", [(12, 10), (6, 7, 5)])
def test_lattice_footprint_means_equal_the_point_path(shape: tuple[int, ...]) -> None:
    """The slab-wise lattice path of fitted_voxels gives every voxel's footprint mean, as the point path does."""
    from medinr.voxels import evaluate_footprint, lattice_footprint_means

    torch.manual_seed(0)
    model = build_model("mrgrid", len(shape), 1, base_resolution=4, max_resolution=16)
    for grid in model.grids:
        torch.nn.init.normal_(grid, std=0.5)
    coords = Geometry(shape).network_grid().reshape(-1, len(shape))
    expected = evaluate_footprint(model, coords, footprint_offsets(shape, 2)).reshape(*shape, 1)
    slabs = lattice_footprint_means(model, shape, 2, slab_points=3 * 2 ** len(shape) * math.prod(shape[1:]))
    assert slabs.shape == (*shape, 1)
    torch.testing.assert_close(slabs, expected, rtol=1e-5, atol=1e-6)


def test_held_out_voxels_score_a_bounded_sample() -> None:
    """A large held-out set is scored on at most MAX_SCORED_VOXELS of its voxels, spread over all of them, and
    their error is that of the whole set within a few percent."""
    from medinr.training import validators

    rng = np.random.default_rng(0)
    shape = (160, 160, 40)
    image = rng.random(shape).astype(np.float32)
    data = VoxelData.from_image(image, Geometry(shape), 1, 0.2, 0, None, "cpu")
    v = validators.HeldOutVoxels(data, 10)
    assert data.held.numel() > validators.MAX_SCORED_VOXELS >= v.scored.numel() > validators.MAX_SCORED_VOXELS // 2
    assert set(v.scored.tolist()) <= set(data.held.tolist())

    class Constant(torch.nn.Module):
        def evaluate(self, points: torch.Tensor, chunk: int = 0) -> torch.Tensor:
            return torch.full((points.shape[0], 1), 0.25)

    full = float(torch.mean((0.25 - data.target[data.held]) ** 2))
    assert v.error(Constant(), 10) == pytest.approx(full, rel=0.03)


@pytest.mark.parametrize("shape", [(98, 116, 94), (128, 128, 128), (65, 77, 63), (300, 300, 20), (384, 396)])
def test_lattice_tiles_fill_their_budget_in_the_grids_proportions(shape: tuple[int, ...]) -> None:
    """A tile uses nearly all of its voxel budget (halving the longest side left up to half of it unused: 25 x 29 x 24
    of the 2 mm MNI grid for 32 768 voxels), never more, never a side longer than the grid's."""
    from medinr.image_fit import tile_shape

    budget = 1 << 15
    tile = tile_shape(shape, budget)
    assert 0.97 * budget <= math.prod(tile) <= budget
    assert all(1 <= t <= n for t, n in zip(tile, shape))
    ratios = [t / n for t, n in zip(tile, shape) if t < n]
    assert max(ratios) - min(ratios) < 0.05  # the same fraction of every axis (up to rounding)
    assert tile_shape((20, 30, 40), budget) == (20, 30, 40)  # a small grid is one whole step


def test_a_volume_in_tiles_trains_longer_than_a_slice_in_tiles() -> None:
    """Default main-stage steps: 24 epochs within 600-3000 for a volume drawn in tiles (the 2 mm MNI volume: 792),
    12 within 300-1500 for a slice too large for one step, 300 for a whole-image step."""
    from medinr import image_fit

    def steps(shape: tuple[int, ...]) -> int:
        data = VoxelData.from_image(np.ones(shape, np.float32), Geometry(shape), footprint=2, holdout=0.1, seed=0)
        run = _Run(data, image_fit.LATTICE_POINTS, torch.Generator().manual_seed(0), 1.0, False, "test",
                   lattice=True)
        return image_fit.default_steps(run)

    assert steps((98, 116, 94)) == math.ceil(24 * 98 * 116 * 94 / math.prod(image_fit.tile_shape((98, 116, 94),
                                                                                                  1 << 15)))
    assert steps((40, 40, 40)) == 600 and steps((240, 240, 240)) == 3000
    assert steps((600, 600)) == 300 and steps((256, 256)) == image_fit.FULL_BATCH_STEPS


def test_random_point_steps_bound_the_points_drawn_and_siren_takes_smaller_batches() -> None:
    """Without a lattice path a step draws random footprint points: the step range (300-1500 steps of
    POINT_BATCH points) bounds the points drawn, so a quarter of the batch takes four times the steps; the point
    families (SIREN, WIRE, Fourier features) draw their own, smaller batch (``point_batch``), others the default."""
    from medinr import image_fit
    from medinr.models.tasks import task_defaults

    def steps(shape: tuple[int, ...], batch: int) -> int:
        data = VoxelData.from_image(np.ones(shape, np.float32), Geometry(shape), footprint=2, holdout=0.1, seed=0)
        run = _Run(data, batch, torch.Generator().manual_seed(0), 1.0, False, "test")
        return image_fit.default_steps(run)

    full = image_fit.POINT_BATCH
    assert steps((64, 64), full) == 300 and steps((64, 64), full // 4) == 1200  # 12 epochs need fewer: the floor
    assert steps((48, 48, 48), full) == 324 and steps((48, 48, 48), full // 4) == 1296  # 12 epochs of 48^3
    assert steps((200, 200, 200), full // 4) == 6000  # the ceiling, in points
    assert task_defaults("siren", "image", (64, 64)).point_batch == 1 << 13
    assert task_defaults("fourier", "image", (64, 64)).point_batch == 1 << 13
    assert task_defaults("wire", "image", (64, 64)).point_batch == 1 << 13
    assert task_defaults("mrgrid", "image", (64, 64)).point_batch is None
    assert task_defaults("siren", "deformation", ()).point_batch is None

    image = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    fitted = fit_image(image, Geometry((24, 24)), model="siren", steps=3, holdout=0.0,
                       model_options={"hidden": 8, "layers": 1})
    assert fitted.history.stages["main"]["points_per_step"] < image_fit.POINT_BATCH


def test_a_volume_of_random_points_fits_voxels_from_antithetic_pairs() -> None:
    """A point family's step in 3D takes each voxel's footprint mean from an antithetic pair: a batch of N points
    holds N / 2 voxels (not N / 8) for the same network evaluations, the step bounds still count points, a fit
    draws half its family's points a step by default, and it records the pairs; a slice keeps the footprint's
    midpoints, and so does a lattice family in 3D. A fit from pairs matches its voxels, held-out ones included."""
    from medinr import image_fit

    def run(shape: tuple[int, ...], paired: bool) -> _Run:
        data = VoxelData.from_image(np.ones(shape, np.float32), Geometry(shape), footprint=2, holdout=0.1, seed=0)
        return _Run(data, image_fit.POINT_BATCH // 4, torch.Generator().manual_seed(0), 1.0, False, "test",
                    paired=paired)

    pairs, midpoints = run((48, 48, 48), True), run((48, 48, 48), False)
    assert pairs.batch == image_fit.POINT_BATCH // 8 and midpoints.batch == image_fit.POINT_BATCH // 32
    # 12 epochs of 48^3 voxels: 1296 steps of 1024 voxels; of 4096, fewer than the floor (1200 steps of 8192 points)
    assert image_fit.default_steps(midpoints) == 1296 and image_fit.default_steps(pairs) == 1200
    assert pairs.points_per_step == midpoints.points_per_step  # the same network evaluations a step

    zz, yy, xx = np.mgrid[:12, :12, :12]
    volume = (np.sin(xx / 3.0) + np.cos(yy / 4.0) + 0.5 * np.sin(zz / 2.5)).astype(np.float32)
    fitted = fit_image(volume, Geometry(volume.shape), model="siren", steps=150, holdout=0.1, seed=0,
                       model_options={"hidden": 32, "layers": 2, "omega_0": 10.0}, compile=False, progress=False)
    fit = fitted.extra["fit"]
    assert fit["footprint_estimate"] == "antithetic pairs"
    # half the SIREN's 8192 points (image_fit.PAIRED_BATCH_SHARE): 2048 pairs, and the prior's 512 x 3 points
    assert fitted.history.stages["main"]["points_per_step"] == 4096 + 3 * 512
    assert fit["train_psnr"] > 38.0 and fit["holdout_psnr"] > 30.0, fit  # 43.3 and 34.5 dB
    flat = fit_image(volume[0], Geometry(volume.shape[1:]), model="siren", steps=3, holdout=0.0,
                     model_options={"hidden": 8, "layers": 1}, progress=False)
    grid = fit_image(volume, Geometry(volume.shape), model="mrgrid", steps=3, holdout=0.0, progress=False)
    assert flat.extra["fit"]["footprint_estimate"] == grid.extra["fit"]["footprint_estimate"] == "midpoints"


def test_a_compiled_point_fit_trains_the_model_as_the_eager_one() -> None:
    """``compile=True`` runs a random-point fit's training forward through ``torch.compile``: the same seed gives
    the same fit as eager (to float rounding of the fused kernels), the choice records it, and WIRE (whose Gabor
    wavelets are many element-wise passes) compiles by default, SIREN in 3D only, the lattice and other point
    families never."""
    from medinr.models.tasks import task_defaults

    assert task_defaults("wire", "image", (64, 64)).compile_points
    assert not task_defaults("siren", "image", (64, 64)).compile_points
    assert task_defaults("siren", "image", (16, 16, 16)).compile_points  # 3D only: its fits outlast the compile
    assert not task_defaults("wire", "deformation", ()).compile_points
    yy, xx = np.mgrid[:20, :20]
    image = (np.sin(xx / 3.0) + np.cos(yy / 4.0)).astype(np.float32)
    kwargs = dict(model="wire", steps=12, holdout=0.2, model_options={"hidden": 16, "layers": 2}, seed=1,
                  progress=False, batch_size=256)
    eager = fit_image(image, Geometry((20, 20)), compile=False, **kwargs)
    compiled = fit_image(image, Geometry((20, 20)), compile=True, **kwargs)
    assert not eager.extra["fit"]["compiled"] and compiled.extra["fit"]["compiled"]
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    assert compiled.extra["fit"]["chosen_step"] == eager.extra["fit"]["chosen_step"]
    lattice = fit_image(image, Geometry((20, 20)), model="mrgrid", steps=3, compile=True, progress=False)
    assert not lattice.extra["fit"]["compiled"]
