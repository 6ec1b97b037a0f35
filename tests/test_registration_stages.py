"""Registration stages of issue 12: affine, symmetric (inverse), label loss, label checks, identity start per family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medinr.errors import MedinrError
from medinr.geometry import Geometry, sample_grid
from medinr.io import load_image, save_image
from medinr.models import MODEL_REGISTRY
from medinr.registration import register, register_with_inverse
from medinr.registration.evaluation import dice_per_label, inverse_consistency
from medinr.registration.field import dense_displacement, warp_image
from medinr.registration.settings import settings_from_preset
from pipelines.cli import main
from tests.test_registration import SLICE, smooth_field


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def slice64() -> tuple[np.ndarray, Geometry]:
    image, geometry = load_image(SLICE)
    small = geometry.resized((64, 64))
    return warp_image(image, geometry, np.zeros((64, 64, 2)), small), small


def _through(image: np.ndarray, g: Geometry, points_mm: np.ndarray) -> np.ndarray:
    """``image`` (on ``g``) sampled at world points, zero outside."""
    t = torch.as_tensor(image, dtype=torch.float64)
    coords = torch.as_tensor(g.world_to_network(points_mm))
    return sample_grid(t, coords, padding_mode="zeros").numpy().astype(np.float32)


def test_affine_stage_recovers_known_affine(slice64):
    """moving(M x) = fixed(x) for a known M (6 deg, scales 1.06/0.95, shear, shift): M is found within 0.5 mm."""
    fixed, g = slice64
    c, s = np.cos(np.radians(6.0)), np.sin(np.radians(6.0))
    a = np.array([[c, -s], [s, c]]) @ np.array([[1.06, 0.03], [0.0, 0.95]])
    centre = g.world_box().lo + g.world_box().half_extent_mm
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = a, centre - a @ centre + np.array([5.0, -3.0])
    y = g.world_grid(dtype=torch.float64).numpy()
    moving = _through(fixed, g, (y - m[:2, 2]) @ np.linalg.inv(a).T)  # moving(y) = fixed(M^-1 y)
    s_ = settings_from_preset("default", affine="on", steps=1, lr=0.0, affine_steps=150)
    field = register(fixed, g, moving, g, s_, seed=0)
    est = np.asarray(field.output.affine)
    tissue = ndimage.binary_erosion(fixed > 0.1, iterations=2)
    x = y[tissue]
    err = np.linalg.norm(x @ (est[:2, :2] - a).T + est[:2, 2] - m[:2, 2], axis=-1)
    # stated tolerance: mean error of the recovered map over the tissue below 0.5 mm (1/8 of a 4 mm pixel)
    assert err.mean() < 0.5, (err.mean(), est)
    assert np.abs(est[:2, :2] - a).max() < 0.02
    # the saved field is the full displacement: u(x) = M x - x (the INR part did not move at lr 0)
    u = dense_displacement(field, g)
    assert np.allclose(u, y @ (est[:2, :2] - np.eye(2)).T + est[:2, 2], atol=1e-4)


def test_symmetric_forward_and_inverse_compose_to_identity(slice64):
    moving, g = slice64
    truth = smooth_field(g, max_mm=6.0, seed=5)
    fixed = warp_image(moving, g, truth, g)
    s = settings_from_preset("default", symmetric=True)
    forward, inverse = register_with_inverse(fixed, g, moving, g, s, seed=0)
    # the inverse lives on the moving image (svf: a lattice of its grid, frame "network")
    assert inverse is not None and inverse.kind == "displacement" and inverse.geometry == g
    tissue = ndimage.binary_erosion(fixed > 0.1, iterations=3)
    ic = inverse_consistency(forward, inverse, g, tissue)
    u = dense_displacement(forward, g)
    moved = np.linalg.norm(u, axis=-1)[tissue].mean()
    # stated error: |phi_inv(phi(x)) - x| below 0.25 mm on average (1/16 pixel), 1 mm at worst, in the tissue,
    # for a field that moves the tissue by about 2 mm on average
    assert moved > 1.0, moved
    assert ic["mean_mm"] < 0.25 and ic["max_mm"] < 1.0, ic
    # and the inverse really is an inverse of the truth: moving(y) ~ fixed(y + w(y))
    w = dense_displacement(inverse, g)
    back = warp_image(fixed, g, w, g)
    residual, before = np.abs(back - moving)[tissue].mean(), np.abs(fixed - moving)[tissue].mean()
    assert residual < 0.5 * before, (residual, before)


def _disk(g: Geometry, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    x = g.world_grid(dtype=torch.float64).numpy()
    return (np.linalg.norm(x - centre_mm, axis=-1) < radius_mm).astype(np.float32)


def test_label_loss_raises_dice(slice64):
    """Same intensities, but the moving label disk sits 6 mm away: only the label term can move it."""
    image, g = slice64
    centre = g.world_box().lo + g.world_box().half_extent_mm
    fl, ml = _disk(g, centre, 30.0), _disk(g, centre + np.array([6.0, 0.0]), 30.0)
    dice = {}
    for weight in (0.0, 2.0):
        s = settings_from_preset("fast", steps=80, label_weight=weight)
        field = register(image, g, image, g, s, labels=(fl, ml), seed=0)
        u = dense_displacement(field, g)
        dice[weight] = dice_per_label(fl, warp_image(ml, g, u, g, mode="nearest"))["1"]
    before = dice_per_label(fl, ml)["1"]
    assert dice[0.0] < before + 0.02  # intensities alone keep the identity
    assert dice[2.0] > before + 0.1 and dice[2.0] > 0.95, (before, dice)


@pytest.mark.parametrize("case", ["shape", "no_overlap", "labels_without_weight_partner"])
def test_bad_labels_one_clear_error(slice64, case):
    image, g = slice64
    fl = (image > 0.3).astype(np.float32)
    ml = fl.copy()
    if case == "shape":
        ml = ml[:40]
    elif case == "no_overlap":
        ml = 2 * ml  # label 2 only where the fixed image has label 1
    s = settings_from_preset("fast", steps=1, label_weight=1.0)
    with pytest.raises(MedinrError) as info:
        register(image, g, image, g, s, labels=None if case == "labels_without_weight_partner" else (fl, ml))
    assert len(str(info.value).splitlines()) == 1


def test_cli_labels_without_common_values(tmp_path, capsys, slice64):
    image, g = slice64
    save_image(tmp_path / "f.nii.gz", image, g)
    save_image(tmp_path / "fl.nii.gz", (image > 0.3).astype(np.float32), g)
    save_image(tmp_path / "ml.nii.gz", 3 * (image > 0.3).astype(np.float32), g)
    f = str(tmp_path / "f.nii.gz")
    rc = main(["register", f, f, "--fixed-labels", str(tmp_path / "fl.nii.gz"), "--moving-labels",
               str(tmp_path / "ml.nii.gz"), "--out", str(tmp_path / "out"), "--quiet", "--steps", "2"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "share no" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", sorted(MODEL_REGISTRY))
def test_every_family_starts_exactly_at_identity(family):
    """With a zero learning rate the fit cannot move u: what is left is the start, which must be u = 0."""
    g = Geometry((24, 20), np.diag([3.0, 3.0, 1.0, 1.0]))
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random(g.shape), 2.0).astype(np.float32)
    s = settings_from_preset("fast", model=family, model_options={}, steps=1, lr=0.0)
    if MODEL_REGISTRY[family].lattice_bound:
        with pytest.raises(MedinrError, match="lattice-bound"):
            register(image, g, image, g, s)
        return
    field = register(image, g, image, g, s, seed=1)
    assert field.output.affine is None  # same grid: 'auto' skips the affine stage
    u = dense_displacement(field, g)
    assert np.all(u == 0.0), (family, float(np.abs(u).max()))


def test_cli_symmetric_writes_the_inverse(tmp_path, slice64):
    import json

    import SimpleITK as sitk

    moving, g = slice64
    fixed = warp_image(moving, g, smooth_field(g, 4.0, seed=6), g)
    save_image(tmp_path / "f.nii.gz", fixed, g)
    save_image(tmp_path / "m.nii.gz", moving, g)
    out = tmp_path / "out"
    rc = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "--out", str(out), "--quiet",
               "--preset", "fast", "--steps", "20", "--symmetric"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics["inverse_consistency"]) == {"mean_mm", "max_mm"}
    inv = sitk.ReadImage(str(out / "inverse_displacement.nii.gz"), sitk.sitkVectorFloat64)
    assert inv.GetSize() == tuple(moving.shape) and (out / "inverse_transform.inr").is_file()


# ---- settings by stage -------------------------------------------------------------------------------------
def test_presets_keep_their_numbers_by_stage():
    """Each preset's numbers, by stage (the SVF's levels, steps, squarings and rate as chosen on bench/register.py's
    panels: README, Registration)."""
    from medinr.registration.settings import PRESETS, INRStage, SVFStage

    d = PRESETS["default"]
    assert isinstance(d.deformable, SVFStage) and d.transform == "svf"
    assert (d.deformable.steps, d.deformable.model, d.deformable.loss, d.deformable.window, d.deformable.fold,
            d.deformable.diffusion, d.deformable.squarings, d.deformable.lr) == (95, "grid", "lncc", 5, 3.0, 0.03, 4,
                                                                               None)
    assert d.deformable.levels == ((4, 4, 2.0, 0.5), (3, 2, 1.0, 0.3), (2, 1, 0.5, 0.2))
    assert (d.affine.mode, d.affine.steps, d.affine.levels) == ("auto", 80, (4.0, 2.0))
    assert d.labels.weight == 0.0 and d.intensity.histogram_match is False
    fast = PRESETS["fast"]
    assert fast.deformable.steps == 60 and fast.affine.steps == 60
    assert fast.deformable.levels == ((4, 4, 2.0, 0.6), (3, 2, 1.0, 0.3), (2, 1, 0.5, 0.1))
    assert fast.deformable.lr is None
    inr = PRESETS["inr"].deformable
    assert isinstance(inr, INRStage) and (inr.model, inr.steps, inr.lr, inr.loss, inr.jacobian, inr.window, inr.fold,
                                          inr.batch, inr.reg_points, inr.levels, inr.inverse_consistency) == (
        "siren", 300, 1e-3, "ncc", 0.005, 3, 3.0, 8000, 1000, (2.0, 1.0, 0.0), 0.1)
    quick = PRESETS["inr-fast"].deformable
    assert (quick.steps, quick.batch, quick.reg_points, quick.levels) == (150, 4000, 500, (2.0, 0.0))
    idir = PRESETS["idir"].deformable
    assert (idir.steps, idir.batch, idir.lr, idir.levels, idir.reg_points) == (2500, 10000, 1e-5, (0.0,), 10000)
    assert idir.model_options == {"hidden": 256, "layers": 3, "omega_0": 32.0, "hidden_omega": 32.0}
    # the INR presets' SIREN (3 x 64, omega 16) now comes from the family's deformation defaults
    from medinr.models.tasks import task_defaults

    assert task_defaults("siren", "deformation", (64, 64), inr.model_options).options == {
        "hidden": 64, "layers": 3, "omega_0": 16.0, "hidden_omega": 30.0}


def test_overrides_go_to_their_stage_and_foreign_ones_are_refused():
    s = settings_from_preset("default", affine_steps=7, label_weight=2.0, histogram_match=True, steps=9)
    assert (s.affine.steps, s.labels.weight, s.intensity.histogram_match, s.deformable.steps) == (7, 2.0, True, 9)
    with pytest.raises(MedinrError, match="'batch' is not a setting of the svf transform"):
        settings_from_preset("default", batch=100)
    with pytest.raises(MedinrError, match="'diffusion' is not a setting of the inr transform"):
        settings_from_preset("inr", diffusion=1.0)
    switched = settings_from_preset("fast", transform="inr")
    assert switched.transform == "inr" and switched.deformable.steps == 150  # fast -> inr-fast
    kan = settings_from_preset("idir", model="kan")  # a preset's model options belong to its own family
    assert kan.deformable.model_options == {}
    keep = settings_from_preset("idir", model="siren", model_options={"hidden": 128})
    assert keep.deformable.model_options["hidden"] == 128 and keep.deformable.model_options["omega_0"] == 32.0


def test_register_has_an_explicit_signature():
    import inspect

    names = list(inspect.signature(register).parameters)
    assert names == ["fixed", "fixed_geometry", "moving", "moving_geometry", "settings", "fixed_mask", "labels",
                     "seed", "device", "progress"]


# ---- the loop's model hooks in registration ----------------------------------------------------------------
def test_kan_grid_schedule_is_honoured_by_both_deformable_stages(slice64):
    image, g = slice64
    moving = np.roll(image, 1, axis=0)
    options = {"encoding": "none", "widths": [4], "grid": 4, "grid_schedule": [[0.3, 8]]}
    inr = register(image, g, moving, g, settings_from_preset("inr-fast", model="kan", model_options=options,
                                                              steps=10, batch=500, reg_points=50), seed=0)
    assert inr.model.family == "kan" and inr.model.config["grid"] == 8
    seen = []
    original = __import__("medinr.models.kan", fromlist=["KAN"]).KAN.training_progress

    def spy(self, fraction):
        seen.append(fraction)
        return original(self, fraction)

    import medinr.models.kan as kan_module

    kan_module.KAN.training_progress = spy
    try:
        register(image, g, moving, g, settings_from_preset("fast", model="kan", model_options=options, steps=10),
                 seed=0)
    finally:
        kan_module.KAN.training_progress = original
    assert seen == [s / 10 for s in range(10)]  # told over all SVF levels' steps, in order


def test_a_network_velocity_runs_on_nodes_farther_apart_than_the_grid_svfs(slice64):
    """The grid SVF keeps its levels; a network velocity's nodes are never finer than NETWORK_NODE_FACTOR voxels
    (the fit runs on those nodes, and metrics.json's resolved settings say so)."""
    import medinr.registration.svf as svf
    from medinr.registration.register import svf_levels

    grid = settings_from_preset("default").deformable
    assert svf_levels(grid) == grid.levels and grid.levels[-1][0] == 2
    kan = settings_from_preset("default", model="kan").deformable
    assert [spec[0] for spec in svf_levels(kan)] == [4.0, 3.5, 3.5]
    assert [spec[1:] for spec in svf_levels(kan)] == [tuple(map(float, spec[1:])) for spec in grid.levels]

    image, g = slice64
    seen = []
    original = svf.ModelVelocity.__call__

    def spy(self, nodes):
        seen.append(tuple(nodes))
        return original(self, nodes)

    svf.ModelVelocity.__call__ = spy
    try:
        options = {"encoding": "none", "widths": [4], "grid": 4}
        out = register(image, g, np.roll(image, 1, axis=0), g,
                       settings_from_preset("fast", model="kan", model_options=options, steps=6), seed=0)
    finally:
        svf.ModelVelocity.__call__ = original
    finest = svf.lattice_shape(g.shape, svf.NETWORK_NODE_FACTOR)
    assert seen and max(n[0] for n in seen) == finest[0] and finest[0] < svf.lattice_shape(g.shape, 2)[0]
    assert out.extra["settings"]["resolved"]["levels"][-1][0] == svf.NETWORK_NODE_FACTOR


def test_the_svf_loop_adds_the_velocity_networks_regulariser(slice64):
    from medinr.models import build_model
    from medinr.registration.settings import PRESETS
    from medinr.registration.svf import ModelVelocity, Penalties, SVFProblem, fit_svf

    image, g = slice64
    model = build_model("kan", 2, 2, encoding="none", widths=[4], grid=4, reg_lambda=1.0)
    model.zero_output_()
    calls = []
    own = model.regularization
    model.regularization = lambda: calls.append(1) or own()
    velocity = ModelVelocity(model.train(), scale=6.4)
    options = {"steps": 6, "lr": 1e-3, "loss": "lncc", "window": 5, "label_weight": 0.0, "squarings": 4,
               "penalties": Penalties()}
    _, history = fit_svf(SVFProblem(image, g, np.roll(image, 1, 0), g), PRESETS["fast"].deformable.levels, velocity,
                         options)
    assert len(calls) == 6 and history.steps == 6
    assert set(history.stages) == {"svf level 1", "svf level 2", "svf level 3"}


# ---- flags that must reach the fit ---------------------------------------------------------------------------
def _register_cli(tmp_path, fixed: str, moving: str, name: str, *extra: str):
    import json

    out = tmp_path / name
    assert main(["register", fixed, moving, "--out", str(out), "--quiet", "--preset", "fast", "--steps", "12",
                 *extra]) == 0
    u = load_image(out / "displacement.nii.gz", allow_vector=True)[0]
    return json.loads((out / "metrics.json").read_text()), u, out


def test_cli_transform_histogram_match_and_label_weight_reach_the_fit(tmp_path, slice64):
    from medinr.checkpoint import load_checkpoint

    moving, g = slice64
    fixed = warp_image(moving, g, smooth_field(g, 4.0, seed=3), g) ** 1.5  # another contrast
    save_image(tmp_path / "f.nii.gz", fixed, g)
    save_image(tmp_path / "m.nii.gz", moving, g)
    labels = (moving > 0.3).astype(np.float32)
    save_image(tmp_path / "fl.nii.gz", (fixed > 0.3 ** 1.5).astype(np.float32), g)
    save_image(tmp_path / "ml.nii.gz", labels, g)
    f, m = str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz")
    _, base, _ = _register_cli(tmp_path, f, m, "base")
    record, matched, _ = _register_cli(tmp_path, f, m, "hist", "--histogram-match")
    assert record["settings"]["settings"]["intensity"]["histogram_match"] is True
    assert np.abs(matched - base).max() > 1e-3  # the matched intensities moved the field
    lab = ["--fixed-labels", str(tmp_path / "fl.nii.gz"), "--moving-labels", str(tmp_path / "ml.nii.gz")]
    _, unweighted, _ = _register_cli(tmp_path, f, m, "lab0", *lab)
    _, weighted, _ = _register_cli(tmp_path, f, m, "lab1", *lab, "--label-weight", "2")
    assert np.array_equal(unweighted, base) and np.abs(weighted - base).max() > 1e-3
    record, _, out = _register_cli(tmp_path, f, m, "inr", "--transform", "inr", "--batch", "500")
    ckpt = load_checkpoint(out / "transform.inr")
    assert ckpt.model.family == "siren" and ckpt.frame == "world_box" and record["settings"]["settings"][
        "transform"] == "inr"
    assert main(["register", f, m, "--out", str(tmp_path / "bad"), "--quiet", "--batch", "500"]) == 2  # svf: no batch


def test_itk_export_with_an_affine_part_on_different_grids(tmp_path, slice64):
    """A moving image on its own grid (finer, transposed, flipped, shifted) and an affine stage: the exported
    displacement (affine part included) applied by SimpleITK reproduces medinr's own warp."""
    import SimpleITK as sitk

    from tests.test_registration import _sitk_resample_check

    image, g = slice64
    shape = (80, 90)
    aff = np.eye(4)
    aff[:2, :2] = np.array([[0.0, -3.0], [2.7, 0.0]])
    lo = g.world_box().lo
    aff[:2, 3] = [lo[0] + 3.0 * (shape[1] - 1) - 10, lo[1] - 12]
    mg = Geometry(shape, aff)
    c, s = np.cos(np.radians(4.0)), np.sin(np.radians(4.0))
    y = mg.world_grid(dtype=torch.float64).numpy()
    centre = lo + g.world_box().half_extent_mm
    x = (y - centre - np.array([3.0, -2.0])) @ np.array([[c, s], [-s, c]]) + centre  # moving(y) = fixed(A^-1 y)
    moving = _through(image, g, x)
    save_image(tmp_path / "f.nii.gz", image, g)
    save_image(tmp_path / "m.nii.gz", moving, mg)
    f, m = str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz")
    record, u, out = _register_cli(tmp_path, f, m, "out", "--affine-steps", "60")
    assert record["metrics"]["affine_used"] is True and record["metrics"]["ncc_after"] > 0.9
    assert np.abs(u).max() > 2.0  # mostly the affine part: the export must carry it
    field = sitk.ReadImage(str(out / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    assert field.GetSize() == tuple(image.shape)  # on the fixed grid, not the moving one
    assert _sitk_resample_check(out, m, f) < 1e-3


def test_svf_rates_grid_one_voxel_a_given_rate_is_kept_and_a_network_takes_its_family_rate():
    from medinr.registration.register import learning_rate

    g = Geometry((16, 16, 16), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert learning_rate(settings_from_preset("default").deformable, g) == 1.0
    assert learning_rate(settings_from_preset("fast").deformable, g) == 1.0
    assert learning_rate(settings_from_preset("default", lr=0.3).deformable, g) == 0.3
    kan = settings_from_preset("fast", model="kan").deformable
    assert kan.lr is None and learning_rate(kan, g) < 0.1  # the KAN's deformation rate, not voxels per step
