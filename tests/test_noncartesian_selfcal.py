"""Non-Cartesian hold-out of whole readouts, its whitened held-out error, noise estimation from non-Cartesian
samples, and the baselines (gridding, SigPy CS with coord= and the held-out lambda)."""

from __future__ import annotations

import numpy as np
import pytest

from medinr.errors import MedinrError
from medinr.metrics import psnr
from medinr.mri.coils import birdcage_maps
from medinr.mri.gridding import density_compensation, gridding
from medinr.mri.noise import estimate_noise_samples, noise_from_scan
from medinr.mri.readout_holdout import (
    NonCartesianHeldOutError,
    describe_readout_split,
    holdout_readouts,
    protected_readouts,
)
from medinr.mri.simulate_noncart import simulate_noncartesian
from medinr.mri.trajectories import cartesian_trajectory, golden_angle_radial, radius, variable_density_spiral


def _phantom(n: int) -> np.ndarray:
    i, j = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    body = ((i / 0.85) ** 2 + (j / 0.7) ** 2 < 1).astype(np.float32)
    spots = sum(((i - a) ** 2 + (j - b) ** 2 < r**2) for a, b, r in [(0.3, 0.2, 0.15), (-0.4, -0.1, 0.1),
                                                                    (0.0, -0.35, 0.08)])
    return body * (0.6 + 0.4 * (i > -0.2)) + 0.5 * spots.astype(np.float32)


def test_radial_and_spiral_protect_no_readout_cartesian_lines_protect_the_centre():
    grid = (64, 64)
    assert not protected_readouts(golden_angle_radial(32, grid), grid).any()
    assert not protected_readouts(variable_density_spiral(8, grid), grid).any()
    lines = cartesian_trajectory(grid)  # readout i sits at k_0 = i - 32
    protected = protected_readouts(lines, grid)
    assert protected[32] and not protected[0] and not protected[63]
    _, held = holdout_readouts(lines, grid, 0.3, seed=0)
    assert not (held & protected).any()


def test_holdout_readouts_is_a_reproducible_partition_with_disjoint_folds():
    grid = (64, 64)
    traj = golden_angle_radial(48, grid)
    fit, held = holdout_readouts(traj, grid, 0.1, seed=3)
    assert not (fit & held).any() and (fit | held).all() and held.sum() == 5
    again = holdout_readouts(traj, grid, 0.1, seed=3)[1]
    assert (again == held).all()
    other_fold = holdout_readouts(traj, grid, 0.1, seed=3, fold=1)[1]
    assert not (other_fold & held).any()
    assert holdout_readouts(traj, grid, 0.01, seed=0)[1].sum() == 3  # at least 3 units
    assert not holdout_readouts(traj, grid, 0.0, seed=0)[1].any()
    assert describe_readout_split(traj, grid, held) == {
        "unit": "readout (spoke / interleave)", "held_out_units": 5, "acquired_units": 48, "calibration_units": 0}
    with pytest.raises(MedinrError, match="held-out fraction"):
        holdout_readouts(traj, grid, 1.0, seed=0)


def test_held_out_error_is_at_the_noise_floor_for_the_truth():
    grid = (48, 48)
    image = _phantom(48)
    maps = birdcage_maps(grid, 4)
    traj = golden_angle_radial(40, grid)
    acq = simulate_noncartesian(image, traj, maps, snr_db=25, seed=2)
    _, held = holdout_readouts(traj, grid, 0.15, seed=0)
    whitening = np.eye(4, dtype=np.complex64) / acq.noise_sigma
    score = NonCartesianHeldOutError(acq.samples, traj, maps, held, whitening)
    at_truth = score(acq.image)
    assert 0.85 < at_truth < 1.15  # whitened: noise units
    assert score(np.abs(acq.image)) > 3 * at_truth  # the wrong phase is far off
    assert score(0.8 * acq.image) > at_truth


def test_noise_estimates_for_non_cartesian_data(coronal_slice):
    grid = (256, 256)
    traj = golden_angle_radial(48, grid)
    acq = simulate_noncartesian(np.abs(coronal_slice), traj, birdcage_maps(grid, 4), snr_db=20, seed=0)  # real slice
    estimate = estimate_noise_samples(acq.samples, radius(traj, grid))
    # an upper bound where the object has signal out to the edge, like the Cartesian estimate (8 % here)
    assert abs(estimate.sigma / acq.noise_sigma - 1) < 0.15 and estimate.shell_ratio < 1.2
    rng = np.random.default_rng(0)
    scan = (rng.standard_normal((4, 2000)) + 1j * rng.standard_normal((4, 2000))) * 0.5
    assert abs(noise_from_scan(scan, 2.0).sigma / (0.5 * np.sqrt(2) * np.sqrt(2)) - 1) < 0.05
    with pytest.raises(MedinrError, match="too few"):
        noise_from_scan(scan[:, :5])


@pytest.fixture(scope="module")
def radial_case():
    grid = (48, 48)
    image = _phantom(48)
    maps = birdcage_maps(grid, 6)
    traj = golden_angle_radial(20, grid)
    acq = simulate_noncartesian(image, traj, maps, snr_db=30, seed=1)
    return image, maps, traj, acq


def test_sigpy_cs_with_coord_beats_gridding(radial_case):
    pytest.importorskip("sigpy")
    from medinr.mri.noncart_baselines import cs_reconstruct_noncart, noncart_normalisation

    image, maps, traj, acq = radial_case
    dcf = density_compensation(traj, image.shape)
    grid_psnr = psnr(image, np.abs(gridding(acq.samples, traj, dcf, maps)))
    scale = noncart_normalisation(acq.samples, traj, maps, dcf)
    cs = cs_reconstruct_noncart(acq.samples / scale, traj, maps, "tv", 3e-3, dcf, max_iter=60) * scale
    assert psnr(image, np.abs(cs)) > grid_psnr + 3


def test_held_out_lambda_sweep_on_readouts(radial_case):
    pytest.importorskip("sigpy")
    from medinr.mri.noncart_baselines import cs_sweep_holdout_noncart

    image, maps, traj, acq = radial_case
    _, held = holdout_readouts(traj, image.shape, 0.15, seed=0)
    validation = NonCartesianHeldOutError(acq.samples, traj, maps, held, np.eye(6) / acq.noise_sigma)
    sweep = cs_sweep_holdout_noncart(acq.samples, traj, maps, "tv", validation, lambdas=(1e-3, 1e-2), max_iter=40)
    assert sweep.criterion == "whitened error on held-out readouts"
    assert not sweep.at_boundary and len(sweep.lambdas) >= 3  # widened until the best is inside
    assert np.isfinite(sweep.image).all() and sweep.image.shape == image.shape
    dcf = density_compensation(traj, image.shape)
    assert psnr(image, np.abs(sweep.image)) > psnr(image, np.abs(gridding(acq.samples, traj, dcf, maps))) + 3


def test_problem_from_measured_gre_coil_images(samples):
    """The measured 2-coil GRE scan sampled along 100 golden-angle spokes: maps, noise and gridding work."""
    import torch

    from medinr.geometry import Geometry
    from medinr.mri.fft import ifftc
    from medinr.mri.noncart_problem import noncart_problem_from_coil_images

    kspace = np.load(samples / "gre_2coil_kspace.npy")
    coil_images = ifftc(torch.from_numpy(kspace)).numpy()
    problem = noncart_problem_from_coil_images(coil_images, Geometry((160, 160)), "radial", readouts=100)
    assert problem.reference_kind == "coil_rss" and problem.samples.shape == (2, 100, 320)
    rss = np.sqrt(np.sum(np.abs(problem.maps) ** 2, axis=0))
    assert np.allclose(rss[rss > 0], 1, atol=1e-4) and (rss > 0).mean() > 0.3
    gridded = np.abs(problem.gridding())
    assert psnr(problem.reference, gridded) > 20
    op = problem.operator()
    assert op.oshape == problem.samples.shape and problem.whitened_samples().dtype == np.complex64


def test_problem_from_an_mrd_file_uses_its_noise_scan(tmp_path):
    from mrd_files import write_mrd

    from medinr.geometry import Geometry
    from medinr.mri.kspace_io import load_kspace
    from medinr.mri.noncart_problem import noncart_problem_from_image, noncart_problem_from_measured

    simulated = noncart_problem_from_image(_phantom(48), Geometry((48, 48)), "radial", readouts=30, coils=4,
                                           snr_db=30)
    assert simulated.traj.shape[0] == 30 and simulated.reference_kind == "ground_truth"
    rng = np.random.default_rng(0)
    scan = ((rng.standard_normal((4, 1000)) + 1j * rng.standard_normal((4, 1000))) * 0.01).astype(np.complex64)
    path = write_mrd(tmp_path / "radial.h5", simulated.samples, (48, 48, 1), (200.0, 200.0, 5.0),
                     traj=simulated.traj, noise=scan, trajectory="goldenangle")
    problem = noncart_problem_from_measured(load_kspace(path))
    assert problem.noise.method.startswith("noise-adjustment scan") and problem.reference is None
    assert problem.settings["kspace"]["trajectory_type"] == "goldenangle"
    assert np.isfinite(problem.gridding()).all()
