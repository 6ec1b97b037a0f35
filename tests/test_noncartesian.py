"""Non-Cartesian physics: the NUFFT convention against fftc, adjoints, gradients, trajectories, density
compensation, gridding, coil maps from the gridded centre and the simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

from medinr.errors import MedinrError
from medinr.mri.coils import birdcage_maps
from medinr.mri.fft import fftc
from medinr.mri.gridding import (
    calibration_width,
    density_compensation,
    gridding,
    gridding_coil_images,
    noncartesian_maps,
)
from medinr.mri.nufft import NufftOp, NufftSenseOp, resolve_backend
from medinr.mri.operators import adjoint_mismatch, linearity_mismatch
from medinr.mri.simulate_noncart import simulate_noncartesian
from medinr.mri.trajectories import (
    cartesian_trajectory,
    golden_angle_radial,
    radius,
    stack_of_stars,
    variable_density_spiral,
)

BACKENDS = ["finufft", pytest.param("torchkbnufft", marks=pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("torchkbnufft") is None, reason="torchkbnufft not installed"))]


def _rand(*shape: int, seed: int = 0, dtype=torch.complex128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def _phantom(grid: tuple[int, ...]) -> np.ndarray:
    """Two ellipses of different intensity with a smooth edge (a phantom without ground-truth shortcuts)."""
    i, j = np.meshgrid(*(np.linspace(-1, 1, n) for n in grid), indexing="ij")
    outer = expit(-((i / 0.8) ** 2 + (j / 0.65) ** 2 - 1) * 30)
    inner = expit(-(((i - 0.2) / 0.25) ** 2 + ((j + 0.1) / 0.35) ** 2 - 1) * 30)
    return (outer + 0.8 * inner).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", [(8, 6), (7, 9), (6, 5, 4)])
def test_cartesian_trajectory_through_the_nufft_is_fftc(backend, grid):
    """The convention test: integer 1/FOV positions reproduce the centred orthonormal FFT, sign, centre and axes."""
    x = _rand(2, *grid)
    op = NufftOp(cartesian_trajectory(grid), grid, batch=2, backend=backend)
    expected = fftc(x, len(grid)).reshape(2, grid[0], -1)
    tol = 1e-10 if backend == "finufft" else 1e-4  # torchkbnufft's 6-point kernel
    assert float((op(x) - expected).abs().max() / expected.abs().max()) < tol
    # and the adjoint is the inverse on the full grid
    assert float((op.H(op(x)) - x).abs().max()) < tol * 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_nufft_sense_adjoint_and_linearity(backend):
    grid = (20, 16)
    maps = torch.from_numpy(birdcage_maps(grid, 3)).to(torch.complex128)
    traj = golden_angle_radial(7, grid)
    op = NufftSenseOp(maps, traj, backend)
    assert op.oshape == (3, 7, 40) and op.ishape == grid
    for linop in (op, op.H, op.nufft, op.H @ op):
        assert adjoint_mismatch(linop) < 1e-12
    assert linearity_mismatch(op) < 1e-12
    # single precision: the plans of complex64 are exact adjoints of each other too
    assert adjoint_mismatch(op.with_maps(maps.to(torch.complex64)), dtype=torch.complex64) < 5e-5
    sub = op.with_readouts(np.array([0, 3, 5]))
    assert sub.oshape == (3, 3, 40)
    x = _rand(*grid)
    assert torch.allclose(sub(x), op(x)[:, [0, 3, 5]], atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_through_the_nufft_matches_finite_differences(backend):
    """The INR loss back-propagates through the forward model: autograd = finite differences."""
    grid = (8, 8)
    maps = _rand(2, *grid, seed=1)
    traj = np.random.default_rng(0).uniform(-4, 4, (3, 10, 2))
    op = NufftSenseOp(maps, traj, backend)
    y = _rand(2, 3, 10, seed=2)
    x = _rand(*grid, seed=3).requires_grad_(True)
    loss = lambda z: (op(z) - y).abs().pow(2).sum()  # noqa: E731
    loss(x).backward()
    direction = _rand(*grid, seed=4)
    h = 1e-6
    with torch.no_grad():
        numeric = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
    analytic = torch.vdot(x.grad.flatten(), direction.flatten()).real
    assert abs(float(numeric - analytic)) < 1e-6 * abs(float(analytic))
    # and through the coil maps (joint refinement): the maps' gradient exists
    maps_var = maps.clone().requires_grad_(True)
    (NufftSenseOp(maps_var, traj, backend)(x.detach()) - y).abs().pow(2).sum().backward()
    assert maps_var.grad is not None and torch.isfinite(maps_var.grad.abs()).all()


def test_backend_choice_and_bad_trajectories():
    assert resolve_backend("auto", "cpu") == "finufft"
    with pytest.raises(MedinrError, match="unknown NUFFT backend"):
        resolve_backend("bart")
    with pytest.raises(MedinrError, match=r"shape \(\.\.\., 2\)"):
        NufftOp(np.zeros((3, 4, 3)), (8, 8))
    bad = np.zeros((3, 4, 2))
    bad[1, 2, 0] = np.nan
    with pytest.raises(MedinrError, match="NaN"):
        NufftOp(bad, (8, 8))


def test_trajectories_shapes_and_ranges():
    grid = (64, 48)
    radial = golden_angle_radial(13, grid)
    assert radial.shape == (13, 128, 2) and radial.dtype == np.float32
    for a, n in enumerate(grid):  # spans [-N/2, N/2) on every axis
        assert radial[..., a].min() >= -n / 2 - 1e-4 and radial[..., a].max() < n / 2
    assert np.allclose(radial[:, 64], 0)  # every spoke crosses k = 0
    angles = np.arctan2(radial[:, -1, 1] / grid[1], radial[:, -1, 0] / grid[0])
    step = np.mod(np.diff(angles), np.pi)
    assert np.allclose(step, np.mod(np.pi * (np.sqrt(5) - 1) / 2, np.pi), atol=1e-4)  # golden angle
    spiral = variable_density_spiral(8, (64, 64))
    r = radius(spiral, (64, 64))
    assert spiral.shape[0] == 8 and r[:, 0].max() < 1e-6 and 0.95 < r.max() < 1.0
    assert np.abs(np.diff(spiral, axis=1)).max() <= 0.5 + 1e-4  # 2x oversampled along the readout
    sos = stack_of_stars(radial, 5)
    assert sos.shape == (65, 128, 3) and set(np.unique(sos[..., 2])) == {-2, -1, 0, 1, 2}
    with pytest.raises(MedinrError):
        golden_angle_radial(0, grid)


def _point_source_kspace(traj: np.ndarray, grid: tuple[int, int], pixel: tuple[int, int]) -> np.ndarray:
    """Exact k-space of a unit delta at ``pixel`` (centred orthonormal DFT), independent of any NUFFT."""
    phase = sum(traj[..., a].astype(np.float64) * (pixel[a] - grid[a] // 2) / grid[a] for a in range(2))
    return (np.exp(-2j * np.pi * phase) / np.sqrt(np.prod(grid)))[None]


@pytest.mark.parametrize("pixel", [(32, 32), (37, 23), (20, 41)])
def test_point_source_lands_in_its_pixel_through_ours_and_sigpy(pixel):
    """A sign or transposition error of the trajectory convention moves the peak; SigPy's coord agrees with ours."""
    sp = pytest.importorskip("sigpy")
    grid = (64, 64)
    traj = golden_angle_radial(64, grid)
    y = _point_source_kspace(traj, grid, pixel)
    dcf = density_compensation(traj, grid)
    ours = gridding(y, traj, dcf, grid=grid)
    assert np.unravel_index(np.argmax(ours), grid) == pixel
    assert 0.7 < ours[pixel] < 1.3  # the gridded delta keeps its unit amplitude
    theirs = sp.nufft_adjoint(y[0] * dcf, traj.astype(np.float64), oshape=grid)
    assert np.unravel_index(np.argmax(np.abs(theirs)), grid) == pixel
    forward = NufftOp(traj, grid)(torch.from_numpy(np.eye(1, 64 * 64, pixel[0] * 64 + pixel[1]).reshape(1, *grid)))
    assert np.allclose(forward.numpy(), y, atol=1e-5)


def test_density_compensated_gridding_recovers_a_nyquist_sampled_image():
    grid = (64, 64)
    image = _phantom(grid)
    traj = golden_angle_radial(101, grid)  # pi/2 * 64 spokes: Nyquist
    acq = simulate_noncartesian(image, traj, birdcage_maps(grid, 4), phase=False)
    maps = birdcage_maps(grid, 4)
    errors = {}
    for method in ("voronoi", "pipe"):
        dcf = density_compensation(traj, grid, method)
        recon = gridding(acq.samples, traj, dcf, maps)
        errors[method] = np.linalg.norm(recon - image) / np.linalg.norm(image)
    plain = gridding(acq.samples, traj, np.ones(traj.shape[:2], np.float32), maps)
    plain_err = np.linalg.norm(plain * np.vdot(plain, image).real / np.vdot(plain, plain).real - image)
    assert errors["voronoi"] < 0.12, errors
    assert errors["pipe"] < 0.4, errors  # Pipe-Menon overweights the ends of the spokes
    assert plain_err / np.linalg.norm(image) > 2 * errors["voronoi"]  # without DCF: blurred even at best scale
    rss = gridding(acq.samples, traj, density_compensation(traj, grid), grid=grid)
    assert rss.dtype == np.float32 and rss.shape == grid


def test_coil_maps_from_the_gridded_centre_match_the_true_ones():
    grid = (64, 64)
    image = _phantom(grid)
    maps = birdcage_maps(grid, 6)
    traj = golden_angle_radial(24, grid)
    acq = simulate_noncartesian(image, traj, maps, snr_db=30, seed=1)
    assert calibration_width(traj, grid) >= 12  # about 2 * 24 / pi
    est = noncartesian_maps(acq.samples, traj, grid, density_compensation(traj, grid))
    inside = image > 0.5
    coherence = np.abs(np.sum(est.conj() * maps, axis=0))  # 1 when equal up to a common phase
    assert np.median(coherence[inside]) > 0.97
    rss = np.sqrt(np.sum(np.abs(est) ** 2, axis=0))
    assert np.allclose(rss[rss > 0], 1, atol=1e-4)  # unit RSS (CONVENTIONS)
    with pytest.raises(MedinrError, match="too few readouts"):
        noncartesian_maps(acq.samples[:, :3], traj[:3], grid, density_compensation(traj[:3], grid))


def test_simulation_noise_level_and_coil_image_input():
    grid = (32, 32)
    image = _phantom(grid)
    maps = birdcage_maps(grid, 4)
    traj = golden_angle_radial(40, grid)
    clean = simulate_noncartesian(image, traj, maps, seed=3)
    noisy = simulate_noncartesian(image, traj, maps, snr_db=20, seed=3)
    assert clean.noise_sigma == 0 and noisy.noise_sigma > 0
    residual = noisy.samples - clean.samples
    assert abs(np.std(residual) / noisy.noise_sigma - 1) < 0.05  # sigma per complex sample
    coil_images = maps * clean.image
    again = simulate_noncartesian(coil_images, traj)  # measured coil images, no maps
    assert np.allclose(again.samples, clean.samples, atol=1e-5) and again.image is None
    gridded = gridding_coil_images(clean.samples, traj, grid, density_compensation(traj, grid))
    assert gridded.shape == (4, *grid)


def test_stack_of_stars_density_is_the_in_plane_density_on_every_partition():
    grid = (32, 32, 4)
    plane = golden_angle_radial(20, grid[:2])
    traj = stack_of_stars(plane, 4)
    dcf = density_compensation(traj, grid)
    assert dcf.shape == (80, 64)
    np.testing.assert_allclose(dcf[:20], dcf[40:60], rtol=1e-6)
    flat = density_compensation(plane, grid[:2])
    np.testing.assert_allclose(dcf[:20] / dcf[:20].sum(), flat / flat.sum(), rtol=1e-5)
    # a point source in 3D grids to its voxel
    pixel = (20, 11, 1)
    phase = sum(traj[..., a].astype(np.float64) * (pixel[a] - grid[a] // 2) / grid[a] for a in range(3))
    y = (np.exp(-2j * np.pi * phase) / np.sqrt(np.prod(grid)))[None]
    image = gridding(y, traj, dcf, grid=grid)
    assert np.unravel_index(np.argmax(image), grid) == pixel


@pytest.mark.slow  # torch.compile: about 5 s on an idle 2-core machine, 30 s when it is shared
def test_real_arithmetic_forward_compiles_as_one_graph_and_matches():
    """forward_real (coil product in real parts, finufft as a custom operator) compiles with fullgraph=True."""
    grid = (24, 24)
    op = NufftSenseOp(torch.from_numpy(birdcage_maps(grid, 3)), golden_angle_radial(8, grid))
    x = _rand(*grid, dtype=torch.complex64)
    real = op.forward_real(torch.view_as_real(x))
    assert real.shape == (3, 8, 48, 2)
    assert torch.allclose(torch.view_as_complex(real.contiguous()), op(x), atol=1e-6)
    y = torch.randn(3, 8, 48, 2, generator=torch.Generator().manual_seed(0))
    param = torch.nn.Parameter(torch.randn(*grid, 2, generator=torch.Generator().manual_seed(1)))

    def loss(p: torch.Tensor) -> torch.Tensor:
        return ((op.forward_real(torch.tanh(p)) - y) ** 2).sum()

    compiled = torch.compile(loss, fullgraph=True)(param)
    compiled.backward()
    grad_compiled, param.grad = param.grad.clone(), None
    eager = loss(param)
    eager.backward()
    assert abs(float(compiled) - float(eager)) < 1e-4 * float(eager)
    assert float((grad_compiled - param.grad).abs().max() / param.grad.abs().max()) < 1e-4
