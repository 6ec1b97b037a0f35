"""Self-calibration: the held-out split, the validation-chosen settings, noise awareness and the CS sweep widening."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.metrics import psnr, tissue_mask
from medinr.models.tasks import task_defaults
from medinr.mri import holdout, make_mask
from medinr.mri import problem as problem_module
from medinr.mri.baselines import DEFAULT_LAMBDAS, LAMBDA_STEP, cs_sweep, zero_filled
from medinr.mri.compare import run_methods
from medinr.mri.config import preset_config
from medinr.mri.holdout import SPLIT_SEED_OFFSET, HeldOutError, describe_split, readout_holdout
from medinr.mri.inr_recon import (
    PathObjective,
    build_recon_model,
    inr_reconstruct,
    lattice_image,
    reconstructed_image,
    whiten_data,
)
from medinr.mri.kspace_io import MeasuredKspace
from medinr.mri.masks import calibration_region
from medinr.mri.problem import problem_from_image, problem_from_kspace
from medinr.training import BestIterate, HeldOutSamples, Schedule, fit

SMALL = {"path": {"steps": 120}, "eval_every": 5}


@pytest.fixture(scope="module")
def small_image(coronal_slice) -> np.ndarray:
    from skimage.transform import resize

    return resize(coronal_slice, (64, 64), anti_aliasing=True).astype(np.float32)


@pytest.mark.parametrize("kind, shape", [("random", (32, 96)), ("equispaced", (20, 64)), ("poisson", (48, 48))])
def test_holdout_split_is_disjoint_outside_calibration_and_seeded(kind, shape):
    mask = make_mask(shape, kind, 3, 0.15, seed=2).mask
    fit, held = readout_holdout(mask, 0.2, seed=5)
    assert not (fit & held).any() and np.array_equal(fit | held, mask)
    assert held.any() and not (held & calibration_region(mask)).any()
    assert not (~mask & held).any()
    info = describe_split(mask, held)
    candidates = info["acquired_units"] - info["calibration_units"]
    assert info["held_out_units"] == max(min(3, candidates // 4), round(0.2 * candidates))
    if kind != "poisson":  # line masks hold out whole readouts
        assert info["unit"] == "readout line" and (held == held[:1]).all()
    again = readout_holdout(mask, 0.2, seed=5)[1]
    other = readout_holdout(mask, 0.2, seed=6)[1]
    fold = readout_holdout(mask, 0.2, seed=5, fold=1)[1]
    assert np.array_equal(again, held) and not np.array_equal(other, held) and not (fold & held).any()
    assert not readout_holdout(mask, 0.0, seed=5)[1].any()
    # the one hold-out rule draws the same readouts as the k-space split's own rule did (benchmarks unchanged)
    lines = info["unit"] == "readout line"
    units = mask[0] if lines else mask
    region = calibration_region(mask)
    candidates = np.flatnonzero(units & ~(region.any(axis=0) if lines else region))
    count = max(round(0.2 * candidates.size), min(3, max(1, candidates.size // 4)))
    legacy = np.zeros(units.size, bool)
    legacy[np.random.default_rng(5 + SPLIT_SEED_OFFSET).permutation(candidates)[:count]] = True
    legacy = np.broadcast_to(legacy.reshape(units.shape), mask.shape) if lines else legacy.reshape(mask.shape)
    assert np.array_equal(held, legacy & mask)


def test_inr_and_cs_are_chosen_on_the_same_held_out_samples(small_image, monkeypatch):
    """One split and one noise estimate per problem: the samples the INR is scored on are the very mask the CS
    lambdas are chosen on, and neither is computed twice."""
    problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.1, 4, "simulated", 30)
    config = preset_config("default", **SMALL)
    config.path.steps, config.path.extend = 40, 1.0
    seen: dict[str, list] = {"inr": [], "cs": [], "noise": 0, "split": 0}
    inr_init, cs_init = HeldOutSamples.__init__, HeldOutError.__init__
    monkeypatch.setattr(HeldOutSamples, "__init__",
                        lambda self, held, *a, **k: seen["inr"].append(held.numpy().copy()) or inr_init(self, held, *a,
                                                                                                          **k))
    monkeypatch.setattr(HeldOutError, "__init__",
                        lambda self, kspace, maps, held, w: seen["cs"].append(np.asarray(held).copy()) or cs_init(
                            self, kspace, maps, held, w))
    estimate, draw = problem_module.estimate_noise, holdout.readout_holdout
    monkeypatch.setattr(problem_module, "estimate_noise", lambda *a: seen.update(noise=seen["noise"] + 1) or
                        estimate(*a))
    monkeypatch.setattr(holdout, "readout_holdout", lambda *a: seen.update(split=seen["split"] + 1) or draw(*a))
    comparison = run_methods(problem, config, ("zero_filled", "l1wavelet", "inr"), seed=3)
    assert seen["noise"] == 1 and seen["split"] == 1
    held = comparison.problem.split.held
    assert held.any() and len(seen["inr"]) == 1 and len(seen["cs"]) == 1
    assert np.array_equal(seen["inr"][0], held) and np.array_equal(seen["cs"][0], held)
    assert np.array_equal(held, readout_holdout(problem.mask.mask, config.holdout_fraction, 3)[1])
    inr = comparison.results["inr"].details
    points = inr["validation_curve"]
    lowest = min(p["validation_error"] for p in points)
    rule = inr["held_out_rule"]
    assert rule["tolerance"] in (0.0, config.tolerance) and rule["held_out_energy"] > 0
    band = [p for p in points if p["validation_error"] <= lowest + rule["tolerance"]]
    assert inr["chosen"] == band[-1]  # the latest point of the recorded curve within the band over its minimum
    # quiet held-out samples: the split's model, walked 2x slower; else the refit walks the path slower where the
    # held-out samples are noise-dominated, at the walk's pace elsewhere
    if rule["quiet"]:
        assert inr["final"].startswith("the split's model") and "no refit" in inr["final"]
    else:
        assert ("1.5x slower" in inr["final"]) == rule["noise_dominated"] and inr["final"].startswith("refitted")


def test_the_band_and_the_longer_warm_up_apply_where_the_held_out_samples_are_noise_dominated():
    """Unit-variance noise alone on the held-out samples: the band and the longer warm-up; a signal 100 noise
    variances strong on them (radial spokes through the centre of k-space): the lowest error after the usual
    warm-up."""
    from medinr.mri.inr_recon import held_out_rule

    g = torch.Generator().manual_seed(0)
    noise = torch.complex(torch.randn(4, 32, 32, generator=g), torch.randn(4, 32, 32, generator=g)) / 2 ** 0.5
    held = torch.zeros(32, 32, dtype=torch.bool)
    held[:, [3, 11, 27]] = True

    class Data:
        maps = torch.ones(4, 32, 32, dtype=torch.complex64)
        grid = (32, 32)

        def __init__(self, data):
            self.data = data

        def residual(self, x):
            return x - self.data

    config = preset_config("default")
    quiet = held_out_rule(Data(noise), held, config)
    assert quiet["held_out_energy"] == pytest.approx(1.0, abs=0.1) and quiet["tolerance"] == config.tolerance > 0
    assert quiet["warmup_fraction"] == config.noise_dominated_warmup > config.warmup_fraction
    assert quiet["noise_dominated"] and quiet["quiet"]
    # a signal of 1.5 noise variances on the held-out samples: still noise-dominated, no longer quiet (a refit
    # on every sample is worth its time)
    some = held_out_rule(Data(noise + 1.5 ** 0.5), held, config)
    assert some["held_out_energy"] == pytest.approx(2.5, abs=0.2) and some["noise_dominated"] and not some["quiet"]
    assert not held_out_rule(Data(noise), held, preset_config("default", quiet_held_out=0.0))["quiet"]
    loud = held_out_rule(Data(noise + 10.0), held, config)
    assert loud["held_out_energy"] == pytest.approx(101.0, rel=0.05) and loud["tolerance"] == 0.0
    assert loud["warmup_fraction"] == config.warmup_fraction and not loud["noise_dominated"] and not loud["quiet"]


def test_quiet_held_out_samples_keep_the_split_of_a_slower_walk(small_image):
    """Where the held-out samples are quiet, no final stage runs: the walk goes split_pace times slower along the
    path (its weights at step k are the path's at k / pace) and its chosen state is the result; where they are
    not (the threshold at 0), the walk keeps the path's pace and the refit follows."""
    from medinr.mri.config import RegularisationPath

    problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.1, 4, "simulated", 30)
    base = {"path": {"steps": 30, "extend": 1.0}, "eval_every": 5, "patience": 2}
    pace = {}
    for name, quiet in (("quiet", 1e6), ("loud", 0.0)):
        config = preset_config("default", quiet_held_out=quiet, split_pace=2.0, **base)
        recon = inr_reconstruct(problem, config, seed=1, progress=False)
        rule, chosen = recon.extra["held_out_rule"], recon.extra["chosen"]
        pace[name] = rule["walk_pace"]
        walked = config.path.steps * rule["walk_pace"]
        slower = RegularisationPath(**{**config.path.to_dict(), "steps": int(walked)})
        assert chosen["tv"] == pytest.approx(slower.tv(chosen["step"]))
        stages = recon.history.stages
        if quiet:
            assert rule["quiet"] and "final" not in stages and recon.extra["final"].startswith("the split's model")
            assert recon.extra["walk_steps"] > config.path.steps  # past the nominal path: it walks 2x slower
        else:
            assert not rule["quiet"] and "final" in stages and recon.extra["final"].startswith("refitted")
            assert recon.extra["walk_steps"] <= config.path.steps
    assert pace == {"quiet": 2.0, "loud": 1.0}
    with pytest.raises(MedinrError, match="split's pace"):
        preset_config("default", split_pace=0.5)
    with pytest.raises(MedinrError, match="quiet_held_out"):
        preset_config("default", quiet_held_out=-1.0)


def test_the_coarse_start_fits_the_centre_of_k_space_with_the_levels_it_resolves(small_image):
    """The path's coarse start (``coarse_fraction``): its steps fit the centre of k-space with the model's levels
    up to half the finest (the finer get no gradient) and give the validator no residual; the steps after fit
    every sample with every level. A family without levels (SIREN) and a fine-tune (held weights) have none."""
    problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.1, 4, "simulated", 30)
    kspace, maps, mask = problem.tensors(torch.device("cpu"))
    mask = mask.bool()
    data = whiten_data(kspace, maps, mask, problem.prepared(0.1, 0).noise, True)
    config = preset_config("default", path={"steps": 40, "coarse_fraction": 0.25})
    model = build_recon_model("mrgrid", 2, small_image.shape, {})
    assert model.resolutions == [16, 32, 64, 128] and model.levels_within(32) == 2
    objective = PathObjective(model, data, mask, config)
    assert objective.coarse is not None and objective.coarse_levels == 2

    def step(k: int) -> tuple[list[bool], torch.Tensor | None]:
        model.zero_grad(set_to_none=True)
        loss, resid = objective(k)
        loss.backward()
        return [g.grad is not None and bool(g.grad.abs().sum() > 0) for g in model.grids], resid

    assert step(0) == ([True, True, False, False], None) and step(9)[1] is None  # steps 0-9: coarse
    trained, resid = step(10)
    assert trained == [True] * 4 and resid is not None and resid.shape == data.kspace.shape
    assert PathObjective(model, data, mask, config, hold=5).coarse is None  # a fine-tune keeps the fine grid
    siren = build_recon_model("siren", 2, small_image.shape, {"hidden": 16, "layers": 1})
    assert PathObjective(siren, data, mask, config).coarse is None
    with pytest.raises(MedinrError, match="coarse fraction"):
        preset_config("default", path={"coarse_fraction": 1.0})
    assert preset_config("default").path.coarse_steps == 0  # an option, off by default (COARSE_RATIO)
    assert PathObjective(model, data, mask, preset_config("default", path={"steps": 40})).coarse is None


def test_a_volume_starts_coarse_and_beats_zero_filling(samples):
    """A 3D reconstruction (2D Poisson ky-kz mask) with a coarse start records it, and its image beats zero
    filling against the truth."""
    from medinr.io import load_image

    volume, _ = load_image(samples / "mni152_t1_2mm.nii.gz")
    c = [n // 2 for n in volume.shape]
    crop = volume[c[0] - 12: c[0] + 12, c[1] - 14: c[1] + 14, c[2] - 12: c[2] + 12].astype(np.float32)
    crop /= crop.max()
    problem = problem_from_image(crop, Geometry(crop.shape, np.diag([2.0, 2.0, 2.0, 1.0])), "poisson", 4, 0.15, 4,
                                 "simulated", 30, True, 0)
    config = preset_config("default", path={"steps": 60, "coarse_fraction": 0.2}, eval_every=5)
    comparison = run_methods(problem, config, ("zero_filled", "inr"), seed=0)
    coarse = comparison.results["inr"].details["coarse_start"]
    assert coarse["steps"] == pytest.approx(12) and coarse["grid"] == [12, 14, 12]
    assert 1 <= coarse["levels"] < coarse["of_levels"]
    scores = comparison.scores()
    assert scores["inr"]["psnr_tissue"] > scores["zero_filled"]["psnr_tissue"] + 2.0


@pytest.mark.slow
def test_validation_stops_before_the_noise_is_fitted(small_image):
    """Along a path that ends weakly regularised the fit turns to noise: the held-out error turns up, and the
    recorded curve is the true held-out error (the shared rule, recomputed from the images) of each state."""
    problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 3, 0.1, 4, "simulated", 15)
    config = preset_config("default", path={"steps": 300, "tv_start": 30.0, "tv_end": 1.0, "extend": 1.0},
                           eval_every=5, patience=1000, holdout_fraction=0.25)
    problem = problem.prepared(0.25, 0)
    k, maps, mask = problem.tensors()
    mask = mask.bool()
    data = whiten_data(k, maps, mask, problem.noise, True)
    held = torch.from_numpy(problem.split.held)
    torch.manual_seed(0)
    model = build_recon_model("mrgrid", 2, (64, 64), {})
    validator = HeldOutSamples(held, 5, 60, lambda m, step: PathObjective(m, data, mask & ~held, config).residual(step))
    rule = BestIterate(validator, 1000, describe=lambda step: config.path.at(step, model.capacity_levels))
    lr = task_defaults("mrgrid", "reconstruction", (64, 64)).lr
    walk = fit(model, PathObjective(model, data, mask & ~held, config), 300, lr, Schedule("cosine", length=300),
               selection=rule, progress=False)
    points = rule.points
    chosen = rule.best_point
    assert walk.steps == 300 and chosen == min(points, key=lambda p: p["validation_error"])
    assert 0 < chosen["step"] < 250 and points[-1]["validation_error"] > 1.02 * chosen["validation_error"]
    score = HeldOutError(problem.kspace, problem.maps, problem.split.held, data.noise.whitening())
    with torch.no_grad():
        last = score(data.scale * lattice_image(model, (64, 64)).numpy())
        best = score(data.scale * lattice_image(rule.best_model, (64, 64)).numpy())
    assert best == pytest.approx(chosen["validation_error"], rel=1e-3)
    assert last == pytest.approx(points[-1]["validation_error"], rel=1e-3)  # the last state, scored at the end
    assert last > 1.02 * best


@pytest.mark.slow
def test_more_noise_means_stronger_regularisation_or_an_earlier_stop(small_image):
    chosen = {}
    for snr in (15, 40):
        problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 3, 0.1, 4, "simulated",
                                     snr, seed=1)
        recon = inr_reconstruct(problem, preset_config("default", **SMALL), progress=False)
        chosen[snr] = recon.extra["chosen"]
        assert recon.extra["noise"]["sigma"] > 0
    noisy, clean = chosen[15], chosen[40]
    assert noisy["tv"] > clean["tv"] or noisy["step"] < clean["step"], chosen


@pytest.mark.slow
def test_chosen_settings_are_reproducible_with_a_seed(small_image, fixed_threads):
    problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.1, 4, "simulated", 30)
    config = preset_config("default", path={"steps": 40}, eval_every=5)
    runs = [inr_reconstruct(problem, config, seed=s, progress=False) for s in (4, 4, 9)]
    assert runs[0].extra["chosen"] == runs[1].extra["chosen"]
    assert runs[0].extra["validation_curve"] == runs[1].extra["validation_curve"]
    assert runs[0].extra["split"] == runs[1].extra["split"]
    a, b = (r.on_grid() for r in runs[:2])
    np.testing.assert_array_equal(a, b)
    assert runs[2].extra["validation_curve"] != runs[0].extra["validation_curve"]


@pytest.mark.slow
def test_inr_beats_zero_filling_on_a_crop_of_the_measured_gre(samples):
    """The real 2-coil GRE (3T), its central 96 x 96 k-space (a 2.1 mm image of the whole field), 3x."""
    full = np.load(samples / "gre_2coil_kspace.npy")
    crop = np.ascontiguousarray(full[:, 32:128, 32:128])
    measured = MeasuredKspace(crop, None, Geometry((96, 96), np.diag([200 / 96, 200 / 96, 1.0, 1.0])), "gre crop")
    problem = problem_from_kspace(measured, "random", 3.0, 0.12, "espirit", seed=0)
    k, maps, mask = problem.tensors()
    recon = inr_reconstruct(problem, preset_config("default", **SMALL), progress=False)
    inr = np.abs(reconstructed_image(recon, k, maps, mask, False))
    tissue = tissue_mask(problem.reference)
    zf = psnr(problem.reference, np.abs(zero_filled(problem.kspace, problem.maps, problem.mask.mask)), tissue)
    assert psnr(problem.reference, inr, tissue) > zf + 3.0  # measured: 23.5 against 17.6 dB
    assert 0.5 < recon.extra["noise"]["shell_ratio"] < 1.5  # the outer k-space of the scan is noise


def test_cs_sweep_widens_past_a_boundary_optimum():
    grid = (16, 16)
    mask = make_mask(grid, "random", 2, 0.25, seed=0).mask
    kspace = (np.random.default_rng(0).standard_normal((1, *grid)) * mask).astype(np.complex64)
    maps = np.ones((1, *grid), np.complex64)
    target = DEFAULT_LAMBDAS[0] / LAMBDA_STEP**2.3  # nearest to the 2nd extra lambda below the grid
    state = {"now": 0.0}

    def score(image: np.ndarray) -> float:  # a score with its optimum below the starting grid
        return abs(np.log10(state["now"]) - np.log10(target))

    import medinr.mri.baselines as baselines

    original = baselines.cs_reconstruct

    def recording(k, m, s, method, lamda, max_iter=100, start=None, steps=None):
        state["now"] = lamda
        return original(k, m, s, method, lamda, 5, start, steps)

    baselines.cs_reconstruct = recording
    try:
        sweep = cs_sweep(kspace, maps, mask, "l1wavelet", score)
    finally:
        baselines.cs_reconstruct = original
    assert sweep.widened == 3 and not sweep.at_boundary
    assert sweep.lamda < min(DEFAULT_LAMBDAS) and sweep.lambdas == sorted(sweep.lambdas)
    assert abs(np.log10(sweep.lamda) - np.log10(target)) <= 0.5 * np.log10(LAMBDA_STEP) + 1e-9


def test_the_kan_grid_schedule_runs_in_a_reconstruction(small_image):
    """The loop tells the model where it is on the path's schedule: a KAN extends its splines on time."""
    problem = problem_from_image(small_image[::2, ::2], Geometry((32, 32)), "random", 3, 0.15, 2, "simulated", 30)
    options = {"widths": [8], "grid": 4, "grid_schedule": [[0.3, 8]], "encoding_options": {"max_resolution": 32}}
    config = preset_config("default", model="kan", model_options=options, path={"steps": 20}, holdout_fraction=0.0)
    recon = inr_reconstruct(problem, config, progress=False)
    assert recon.model.config["grid"] == 8 and recon.history.steps == 20


def test_a_negative_held_out_band_is_refused_with_its_own_message():
    from medinr.errors import MedinrError

    with pytest.raises(MedinrError, match="held-out rule's tolerance"):
        preset_config("default", tolerance=-0.01)
    with pytest.raises(MedinrError, match="held-out rule's tolerance"):
        preset_config("default", noise_dominated=float("nan"))


def test_baselines_beside_the_inr_give_the_same_images_and_raise_their_errors(small_image):
    """``overlap``: the baselines in a second thread while the INR trains give the images of the one-after-another
    run, each baseline's CPU seconds are its thread's, and a baseline's error reaches the caller."""
    problem = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.1, 4, "simulated", 30)
    config = preset_config("default", **SMALL)
    config.path.steps, config.path.extend = 40, 1.0
    methods = ("zero_filled", "l1wavelet", "inr")
    alone = run_methods(problem, config, methods, seed=3)
    beside = run_methods(problem, config, methods, seed=3, overlap=True)
    assert list(beside.results) == list(methods)
    for name in ("zero_filled", "inr"):
        assert np.array_equal(beside.results[name].image, alone.results[name].image)
    # SigPy's run differs by ~2e-5 between two runs one after another in one process too
    assert beside.results["l1wavelet"].details["lambda"] == alone.results["l1wavelet"].details["lambda"]
    np.testing.assert_allclose(beside.results["l1wavelet"].image, alone.results["l1wavelet"].image, rtol=0, atol=1e-4)
    assert beside.timing()["inr"]["baselines_beside"] and "baselines_beside" not in alone.timing()["inr"]
    assert beside.results["inr"].details.keys() == alone.results["inr"].details.keys()  # a batch's record is the same
    assert all(beside.results[n].cpu_seconds >= 0 for n in methods)
    assert beside.results["l1wavelet"].cpu_seconds <= beside.results["l1wavelet"].seconds * 1.5 + 0.05
    no_reference = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.1, 4, "simulated", 30)
    no_reference.reference = None
    with pytest.raises(MedinrError, match="oracle lambda needs a reference"):
        run_methods(no_reference, config, ("l1wavelet_oracle", "inr"), seed=3, overlap=True)


@pytest.mark.parametrize("method", ["l1wavelet", "tv"])
def test_cs_sweep_estimates_the_step_sizes_once_and_keeps_the_result(method, monkeypatch):
    """SigPy estimates its step sizes by a power iteration in every app; a sweep over one operator needs one."""
    import sigpy.app

    from medinr.mri.baselines import StepSizes, cs_reconstruct

    grid = (32, 32)
    rng = np.random.default_rng(1)
    mask = make_mask(grid, "random", 3, 0.2, seed=0).mask
    maps = np.stack([np.ones(grid), np.exp(1j * np.linspace(0, 2, grid[1]))[None].repeat(grid[0], 0)]) / 2**0.5
    kspace = ((rng.standard_normal((2, *grid)) + 1j * rng.standard_normal((2, *grid))) * mask).astype(np.complex64)
    calls = {"n": 0}
    run = sigpy.app.MaxEig.run

    def counted(self):
        calls["n"] += 1
        return run(self)

    monkeypatch.setattr(sigpy.app.MaxEig, "run", counted)
    sweep = cs_sweep(kspace, maps, mask, method, lambda image: 0.0, max_widening=0)
    assert len(sweep.lambdas) == len(DEFAULT_LAMBDAS) and calls["n"] == 1
    steps = StepSizes()
    first = cs_reconstruct(kspace, maps, mask, method, 1e-2, 20, None, steps)
    assert calls["n"] == 2 and steps.values and all(v > 0 for v in steps.values.values())
    again = cs_reconstruct(kspace, maps, mask, method, 1e-2, 20, None, steps)
    own = cs_reconstruct(kspace, maps, mask, method, 1e-2, 20)
    assert calls["n"] == 3  # only the run without the shared steps estimated its own
    # the power iteration starts from a random vector: its estimate, and so the image, agree to its tolerance
    assert np.abs(again - first).max() <= 1e-6 * np.abs(first).max()
    assert np.abs(own - first).max() <= 1e-2 * np.abs(first).max()


def test_a_walk_that_ends_with_its_held_out_error_still_falling_says_so(small_image):
    """The path ran out before the held-out data found a best state (noise-free k-space, a short path): the
    record says so and the user is told how to go on; a noisy scan whose error turned up before the end does not
    warn."""
    from medinr.mri.inr_recon import still_falling

    rule = BestIterate(None, patience=3)
    for step, error in ((10, 5.0), (20, 4.0), (30, 3.0)):
        rule.add(step, error, None)
    assert still_falling(rule)
    rule.add(40, 3.5, None)
    assert not still_falling(rule)

    clean = problem_from_image(small_image, Geometry(small_image.shape), "random", 3, 0.1, 4, "simulated", None)
    config = preset_config("default", path={"steps": 40, "extend": 1.0}, eval_every=5)
    with pytest.warns(UserWarning, match=r"still falling where the regularisation path ended \(step 40;.*--steps 80\)"):
        recon = inr_reconstruct(clean, config, progress=False)
    assert recon.extra["walk_ended_improving"] is True
    assert recon.extra["chosen"]["step"] == 40

    noisy = problem_from_image(small_image, Geometry(small_image.shape), "random", 3, 0.1, 4, "simulated", 15)
    long = preset_config("default", path={"steps": 300, "tv_start": 30.0, "tv_end": 1.0, "extend": 1.0},
                         eval_every=5, patience=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        recon = inr_reconstruct(noisy, long, progress=False)
    end = 300 * recon.extra["held_out_rule"]["walk_pace"]  # quiet held-out lines: the walk went slower
    assert recon.extra["walk_ended_improving"] is False and recon.extra["chosen"]["step"] < end
