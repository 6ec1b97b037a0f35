"""Registration: known deformations are recovered, identity stays identity, the ITK export reproduces the warp."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from medinr.checkpoint import load_checkpoint
from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import load_image, save_image
from medinr.models import INR
from medinr.registration import register
from medinr.registration.evaluation import jacobian_stats, read_landmarks
from medinr.registration.field import dense_displacement, jacobian_map, jacobian_map_fd, warp_image
from medinr.registration.jacobian import jacobian_determinant
from medinr.registration.settings import settings_from_preset
from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "sample_scans" / "t1_coronal_slice.nii.gz"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny problems: threads cost more than they give on a shared machine


@pytest.fixture(scope="module")
def slice64() -> tuple[np.ndarray, Geometry]:
    """The coronal T1 slice resampled to 64 x 64 (4 mm voxels), values about 0..1."""
    image, geometry = load_image(SLICE)
    small = geometry.resized((64, 64))
    return warp_image(image, geometry, np.zeros((64, 64, 2)), small), small


def smooth_field(geometry: Geometry, max_mm: float, seed: int, sigma_vox: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(geometry.shape), sigma_vox) for _ in range(geometry.ndim)], -1
    )
    return u * (max_mm / np.linalg.norm(u, axis=-1).max())


def test_recovers_known_smooth_2d_deformation(slice64):
    moving, g = slice64
    truth = smooth_field(g, max_mm=6.0, seed=1)  # up to 1.5 voxels
    fixed = warp_image(moving, g, truth, g)
    tissue = ndimage.binary_erosion(fixed > 0.1, iterations=3)
    before = np.linalg.norm(truth, axis=-1)[tissue].mean()
    voxel = float(g.spacing.mean())
    # the default (svf) and the point-sampled INR field, each with its own stated target
    for settings, target in ((settings_from_preset("default"), 0.25), (settings_from_preset("inr-fast"), 0.35)):
        res = register(fixed, g, moving, g, settings, seed=0)
        u = dense_displacement(res, g)
        err = np.linalg.norm(u - truth, axis=-1)[tissue].mean()
        # stated target: mean error inside tissue below a quarter voxel (1 mm at 4 mm voxels) for svf,
        # below 0.35 of the displacement itself for both
        assert err < target * voxel, (settings.transform, err, before)
        assert err < 0.35 * before, (settings.transform, err, before)
        assert jacobian_stats(jacobian_map(res, g))["folded_percent"] == 0.0


def test_identity_stays_identity(slice64):
    """An image registered to itself stays put: what is left is Adam's dither around the optimum, a few hundredths
    of a voxel in the tissue (0.04-0.05 measured at the default rate, 1 fixed voxel per step; 0.02 at a rate of
    0.3, 1.6x less accurate on the same-subject panel), about a quarter of a voxel at most. A loss biased away
    from a perfect match (an ``eps`` on each local variance once drifted an image by over a voxel) fails it."""
    image, g = slice64
    tissue = image > 0.1 * image.max()
    for preset in ("default", "fast"):
        res = register(image, g, image, g, settings_from_preset(preset), seed=3)
        u = np.linalg.norm(dense_displacement(res, g), axis=-1) / g.spacing.min()  # voxels
        # measured 0.043 / 0.052 in the tissue, 0.28 / 0.22 anywhere (default / fast), the same for every seed
        assert u[tissue].mean() < 0.08 and u.max() < 0.4, (preset, u[tissue].mean(), u.max())


def test_different_voxel_sizes_and_orientations(slice64):
    """Moving on a flipped, transposed, finer grid: a pure world shift is recovered in mm."""
    image, g = slice64
    shift = np.array([3.0, -2.0])  # mm, RAS in-plane
    # moving grid: 1.5x finer voxels, axes swapped and the first one flipped, origin elsewhere
    shape = (80, 90)
    aff = np.eye(4)
    aff[:2, :2] = np.array([[0.0, -3.0], [2.7, 0.0]])
    lo = g.world_box().lo
    aff[:2, 3] = [lo[0] + 3.0 * (shape[1] - 1) - 10, lo[1] - 12]
    mg = Geometry(shape, aff)
    # moving(y) = fixed(y - shift), so fixed(x) = moving(x + shift): u = shift
    x = mg.world_grid(dtype=torch.float64).numpy() - shift
    fixed_t = torch.as_tensor(image, dtype=torch.float64)
    from medinr.geometry import sample_grid

    moving = (
        sample_grid(fixed_t, torch.as_tensor(g.world_to_network(x)), padding_mode="zeros").numpy().astype(np.float32)
    )
    s = settings_from_preset("fast", steps=200)
    res = register(image, g, moving, mg, s, fixed_mask=(image > 0.1).astype(np.float32), seed=0)
    u = dense_displacement(res, g)
    inside = ndimage.binary_erosion(image > 0.1, iterations=4)
    assert np.abs(u[inside].mean(axis=0) - shift).max() < 0.5, u[inside].mean(axis=0)


def test_folding_metric_on_constructed_fold():
    g = Geometry((40, 40), np.diag([2.0, 2.0, 1.0, 1.0]))
    x = g.world_grid(dtype=torch.float64).numpy()
    u = np.zeros_like(x)
    # inside a band 10 voxels wide, u_x = -2 (x - c): det(I + grad u) = 1 - 2 = -1 (a mirror: folded)
    band = (np.arange(40) >= 15) & (np.arange(40) < 25)
    c = x[20, 0, 0]
    u[band, :, 0] = -2.0 * (x[band, :, 0] - c)
    det = jacobian_map_fd(u, g)
    stats = jacobian_stats(det)
    # interior of the band folds, its two edge columns use one-sided neighbours: 8 to 10 of 40 columns
    assert 100 * 8 / 40 <= stats["folded_percent"] <= 100 * 10 / 40
    assert stats["det_min"] == pytest.approx(-1.0, abs=1e-6)
    away = np.ones(40, dtype=bool)
    away[13:27] = False  # the band and the columns whose central differences straddle its jumps
    assert np.allclose(det[away], 1.0)
    assert np.allclose(det[16:24], -1.0)

    class Fold(INR):  # the same fold as a network, through the autograd Jacobian map
        def forward(self, p):
            return torch.stack([-2.0 * p[..., 0], torch.zeros_like(p[..., 1])], -1)

    box = g.world_box()
    output = OutputMeaning("displacement", scale=float(box.half_extent_mm[0]))
    field = ContinuousImage(Fold(2, 2), g, output, frame="world_box", world_box=box)
    assert jacobian_stats(jacobian_map(field, g))["folded_percent"] == 100.0


def _write_pair(tmp: Path, fixed: np.ndarray, moving: np.ndarray, g: Geometry) -> tuple[str, str]:
    save_image(tmp / "fixed.nii.gz", fixed, g)
    save_image(tmp / "moving.nii.gz", moving, g)
    return str(tmp / "fixed.nii.gz"), str(tmp / "moving.nii.gz")


def _sitk_resample_check(out: Path, moving_path: str, fixed_path: str) -> float:
    """Apply displacement.nii.gz with SimpleITK and compare to warped.nii.gz; returns max |difference|."""
    disp = sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    fixed = sitk.ReadImage(fixed_path, sitk.sitkFloat64)
    moving = sitk.ReadImage(moving_path, sitk.sitkFloat64)
    tx = sitk.DisplacementFieldTransform(disp)
    resampled = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, tx, sitk.sitkLinear, 0.0))
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nii.gz"), sitk.sitkFloat64))
    return float(np.abs(resampled - warped).max())


def test_cli_3d_outputs_itk_export_and_checkpoint(tmp_path):
    """A tiny oblique 3D case end to end: the ITK field reproduces warped.nii.gz and the checkpoint contract holds."""
    t1, g2 = load_image(ROOT / "sample_scans" / "mni152_t1_2mm.nii.gz")
    labels, _ = load_image(ROOT / "sample_scans" / "mni152_labels_2mm.nii.gz")
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:2, :2] = [[c, -s], [s, c]]
    g = Geometry((20, 24, 20), rot @ g2.resized((20, 24, 20)).affine)  # oblique, anisotropic voxels
    zero = np.zeros(g.shape + (3,))
    moving = warp_image(t1, g2, zero, g)
    truth = smooth_field(g, 4.0, seed=2, sigma_vox=4.0)
    fixed = warp_image(t1, g2, truth, g)
    fpath, mpath = _write_pair(tmp_path, fixed, moving, g)
    save_image(tmp_path / "fl.nii.gz", warp_image(labels, g2, truth, g, mode="nearest"), g)
    save_image(tmp_path / "ml.nii.gz", labels, g2)
    pts = g.voxel_to_world(np.array([[10.0, 12.0, 10.0], [6.0, 8.0, 12.0]]))
    (tmp_path / "fp.csv").write_text("x,y,z\n" + "\n".join(",".join(f"{v:.4f}" for v in p) for p in pts) + "\n")
    (tmp_path / "mp.csv").write_text("x,y,z\n" + "\n".join(",".join(f"{v:.4f}" for v in p) for p in pts) + "\n")
    out = tmp_path / "out"
    rc = main(
        [
            "register",
            fpath,
            mpath,
            "--out",
            str(out),
            "--steps",
            "60",
            "--quiet",
            "--device",
            "cpu",
            "--fixed-labels",
            str(tmp_path / "fl.nii.gz"),
            "--moving-labels",
            str(tmp_path / "ml.nii.gz"),
            "--fixed-landmarks",
            str(tmp_path / "fp.csv"),
            "--moving-landmarks",
            str(tmp_path / "mp.csv"),
        ]
    )
    assert rc == 0
    for name in [
        "warped.nii.gz",
        "warped_labels.nii.gz",
        "displacement.nii.gz",
        "jacobian.nii.gz",
        "transform.inr",
        "metrics.json",
        "report.png",
    ]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["ncc_after"] > metrics["ncc_before"]
    assert set(metrics["dice"]) == {"1", "2"}
    assert metrics["jacobian"]["folded_percent"] == 0.0
    assert len(metrics["landmarks"]["tre_per_point_mm"]) == 2
    # the field is not trivial, so the comparison below tests the LPS export and not just identity
    disp, dg = load_image(out / "displacement.nii.gz", allow_vector=True)
    assert np.abs(disp).max() > 0.5
    assert _sitk_resample_check(out, mpath, fpath) < 1e-3
    # checkpoint contract: image(xyz) is u in RAS mm at xyz (through the lattice's interpolation)
    ckpt = load_checkpoint(out / "transform.inr")
    # the default field is the integrated velocity field on a lattice of the fixed grid
    assert ckpt.kind == "displacement" and ckpt.frame == "network" and ckpt.model.family == "lattice"
    xyz = g.world_grid().reshape(-1, 3)
    with torch.no_grad():
        u = ckpt(xyz).numpy().reshape(g.shape + (3,))
    lps = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64))
    ras = lps.transpose(2, 1, 0, 3) * np.array([-1.0, -1.0, 1.0])
    assert np.abs(u - ras).max() < 1e-4


def test_cli_2d_export_reproduces_warp(tmp_path, slice64):
    image, g = slice64
    fixed = warp_image(image, g, smooth_field(g, 5.0, seed=4), g)
    fpath, mpath = _write_pair(tmp_path, fixed, image, g)
    out = tmp_path / "out2d"
    assert (
        main(
            [
                "register",
                fpath,
                mpath,
                "--out",
                str(out),
                "--preset",
                "fast",
                "--steps",
                "40",
                "--quiet",
                "--loss",
                "lncc",
                "--bending",
                "1.0",
            ]
        )
        == 0
    )
    assert _sitk_resample_check(out, mpath, fpath) < 1e-3
    # a second run does not overwrite without --force
    assert main(["register", fpath, mpath, "--out", str(out), "--steps", "5", "--quiet"]) != 0


def test_landmarks_csv_format(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("x,y,z,name\n1,2,3,a\n4.5,-6,7,b\n")
    assert read_landmarks(p, 3).tolist() == [[1, 2, 3], [4.5, -6, 7]]
    p.write_text("x,y,z\n1,2\n")
    with pytest.raises(MedinrError, match="expected 3 coordinates"):
        read_landmarks(p, 3)


@pytest.mark.parametrize("case", ["missing", "dims", "empty_mask", "labels_alone"])
def test_bad_inputs_clear_error_nothing_written(tmp_path, capsys, slice64, case):
    image, g = slice64
    fpath, mpath = _write_pair(tmp_path, image, image, g)
    args = ["register", fpath, mpath]
    if case == "missing":
        args[2] = str(tmp_path / "nope.nii.gz")
    elif case == "dims":
        save_image(tmp_path / "vol.nii.gz", np.random.rand(8, 8, 8).astype(np.float32), Geometry((8, 8, 8)))
        args[2] = str(tmp_path / "vol.nii.gz")
    elif case == "empty_mask":
        save_image(tmp_path / "mask.nii.gz", np.zeros_like(image), g)
        args += ["--fixed-mask", str(tmp_path / "mask.nii.gz")]
    else:
        args += ["--fixed-labels", fpath]
    out = tmp_path / "out"
    rc = main(args + ["--out", str(out), "--quiet", "--steps", "5"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("medinr: error:"), err
    assert not out.exists()


def test_the_exact_jacobian_of_a_lattice_field_leaves_its_weights_trainable():
    """The Jacobian is taken in x only (the lattice's values frozen meanwhile, so it samples over all threads):
    a linear field's det is exact at every voxel, and the weights still take gradients afterwards."""
    from medinr.models.lattice import LatticeField

    g = Geometry((30, 26, 22), np.diag([2.0, 2.0, 2.0, 1.0]))
    model = LatticeField(3, 3, lattice=[7, 6, 5])
    p = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in (7, 6, 5)], indexing="ij"), 0)
    model.set_values(0.2 * torch.stack([p[0], p[1] * 0, p[2] * 0]) * float(np.mean(g.shape)))
    field = ContinuousImage(model, g, OutputMeaning("displacement", scale=1.0, units="mm"), frame="network")
    det = jacobian_map(field, g)
    expected = 1.0 + 0.2 * float(np.mean(g.shape)) / (g.shape[0] - 1)  # du_x/dx: 0.2 mean(shape) mm per half box
    # the end slices too: on the border the slope into the image (autograd through the clamp gives none there)
    assert det.shape == g.shape and np.allclose(det, expected, atol=1e-4)
    auto = jacobian_determinant(field, g.world_grid(dtype=torch.float32), chunk=4096)
    assert np.allclose(auto[1:-1], expected, atol=1e-4)
    assert all(q.requires_grad for q in model.parameters())
    model(torch.zeros(4, 3)).sum().backward()
    assert all(q.grad is not None for q in model.parameters())


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_jacobian_map_on_the_fields_own_grid_equals_autograd_off_the_nodes(ndim):
    """The closed-form Jacobian of a lattice field on its own grid (an oblique grid, an affine part, an output
    scale) equals autograd at the voxel centres: off the lattice's nodes to rounding, on its border slices the
    one-sided slope into the image (finite differences of the field inward)."""
    from medinr.models.lattice import LatticeField

    shape = (23, 19, 17)[:ndim]
    lattice = (6, 8, 6)[:ndim]  # n - 1 and m - 1 coprime: no voxel centre but the ends lies on a node
    rot = np.linalg.qr(np.random.default_rng(0).standard_normal((ndim, ndim)))[0]
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = rot @ np.diag([1.5, 2.0, 1.2][:ndim])
    affine[:ndim, ndim] = [-10.0, 4.0, 7.0][:ndim]
    g = Geometry(shape, affine)
    model = LatticeField(ndim, ndim, lattice=list(lattice))
    model.set_values(0.3 * torch.randn(ndim, *lattice, generator=torch.Generator().manual_seed(3)))
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] += 0.05 * np.random.default_rng(1).standard_normal((ndim, ndim))
    field = ContinuousImage(model, g, OutputMeaning("displacement", scale=2.5, units="mm", affine=m.tolist()),
                            frame="network")
    fast = jacobian_map(field, g)
    auto = jacobian_determinant(field, g.world_grid(dtype=torch.float32), chunk=4096)
    inner = (slice(1, -1),) * ndim
    np.testing.assert_allclose(fast[inner], auto[inner], rtol=1e-4, atol=1e-4)
    # the border: central differences of u at points a hair inside the image, in mm
    x = g.world_grid(dtype=torch.float64)
    border = np.zeros(shape, dtype=bool)
    border[0] = border[-1] = True
    pts = x[torch.from_numpy(border)]
    inward = torch.as_tensor(g.voxel_to_world(np.clip(g.world_to_voxel(pts.numpy()), 1e-4, np.array(shape) - 1 - 1e-4)))
    exact = ContinuousImage(copy.deepcopy(model).double(), g, field.output, frame="network")  # float64 throughout
    h = 1e-6
    grads = []
    with torch.no_grad():
        for k in range(ndim):
            e = torch.zeros(ndim, dtype=torch.float64)
            e[k] = h
            grads.append((exact(inward + e) - exact(inward - e)) / (2 * h))
    det = np.linalg.det(np.eye(ndim) + torch.stack(grads, -1).numpy())
    np.testing.assert_allclose(fast[border], det, rtol=1e-4, atol=1e-4)
