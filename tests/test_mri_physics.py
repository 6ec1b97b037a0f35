"""MRI physics: FFT convention, SENSE adjoint, masks, coil maps, noise, data consistency, the grid INR lattice path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.models.mrgrid import MultiResGrid
from medinr.mri import SenseOp, fftc, ifftc, make_mask
from medinr.mri.coils import birdcage_maps, espirit_maps
from medinr.mri.masks import fully_sampled_center, validate_mask
from medinr.mri.simulate import simulate_acquisition


def _rand_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)).to(torch.complex128)


@pytest.mark.parametrize("ndim, shape", [(2, (3, 17, 16)), (3, (2, 5, 8, 7))])
def test_fft_matches_sigpy(ndim, shape):
    sp = pytest.importorskip("sigpy")
    x = _rand_complex(*shape)
    axes = tuple(range(-ndim, 0))
    np.testing.assert_allclose(fftc(x, ndim).numpy(), sp.fft(x.numpy(), axes=axes), atol=1e-10)
    np.testing.assert_allclose(ifftc(x, ndim).numpy(), sp.ifft(x.numpy(), axes=axes), atol=1e-10)
    # orthonormal: Parseval, and the centre of k-space is index N // 2 (the DC of a constant image)
    np.testing.assert_allclose(torch.linalg.vector_norm(fftc(x, ndim)), torch.linalg.vector_norm(x), rtol=1e-10)
    const = fftc(torch.ones(9, 8, dtype=torch.complex128), 2)
    assert torch.argmax(const.abs()).item() == 4 * 8 + 4


@pytest.mark.parametrize("grid", [(24, 20), (8, 10, 12)])
def test_sense_adjoint_dot_product(grid):
    maps = torch.from_numpy(birdcage_maps(grid, 4)).to(torch.complex128)
    mask = torch.from_numpy(make_mask(grid, "random", 2.0, 0.2, seed=3).mask)
    op = SenseOp(maps, mask)
    x, y = _rand_complex(*grid, seed=1), _rand_complex(4, *grid, seed=2)
    lhs = torch.vdot(op(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.H(y).flatten())
    assert abs(lhs - rhs) < 1e-9 * abs(lhs)
    # composition and adjoint of a composition follow the same rule
    twice = op.H @ op
    assert torch.allclose(twice(x), op.normal(x))


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("accel, cf", [(4, 0.08), (8, 0.04)])
def test_line_masks_hit_acceleration_and_keep_centre(kind, accel, cf):
    for seed in range(3):
        m = make_mask((96, 256), kind, accel, cf, seed=seed)
        assert abs(m.achieved_acceleration - accel) / accel < 0.03
        assert m.calibration_width >= round(256 * cf)
        assert (m.mask == m.mask[:1]).all()  # the readout (first axis) is fully sampled
    a, b = make_mask((16, 64), kind, accel, cf, seed=5), make_mask((16, 64), kind, accel, cf, seed=5)
    assert np.array_equal(a.mask, b.mask)


def test_poisson_mask_2d_and_3d():
    pytest.importorskip("sigpy")
    m = make_mask((96, 96), "poisson", 4, 0.1, seed=0)
    assert abs(m.achieved_acceleration - 4) / 4 < 0.1
    assert m.mask[43:53, 43:53].all()
    v = make_mask((6, 48, 48), "poisson", 6, 0.1, seed=0)
    assert abs(v.achieved_acceleration - 6) / 6 < 0.1 and (v.mask == v.mask[:1]).all()


def test_masks_reject_bad_requests(tmp_path):
    with pytest.raises(MedinrError, match="samples nothing"):
        validate_mask(np.zeros(32), (16, 32))
    with pytest.raises(MedinrError, match="does not match"):
        validate_mask(np.ones(31), (16, 32))
    with pytest.raises(MedinrError, match="unknown mask"):
        make_mask((16, 32), "spiral")
    with pytest.raises(MedinrError, match="lower --center-fraction"):
        make_mask((16, 32), "random", 8, 0.5)
    np.save(tmp_path / "m.npy", np.zeros((16, 32)))
    with pytest.raises(MedinrError, match="samples nothing"):
        make_mask((16, 32), str(tmp_path / "m.npy"))


def test_birdcage_maps_unit_rss():
    for grid in [(32, 40), (12, 14, 10)]:
        maps = birdcage_maps(grid, 8)
        np.testing.assert_allclose(np.sqrt((np.abs(maps) ** 2).sum(0)), 1.0, atol=1e-5)
        assert np.abs(maps[0] - maps[4]).mean() > 0.1  # coils differ


def test_noise_matches_snr_and_data_consistency():
    img = np.zeros((64, 64), np.float32)
    img[16:48, 20:44] = 1.0
    maps = birdcage_maps(img.shape, 4)
    mask = make_mask(img.shape, "random", 4, 0.1, seed=0).mask
    clean = simulate_acquisition(img, maps, np.ones_like(mask), snr_db=None, seed=1)
    noisy = simulate_acquisition(img, maps, np.ones_like(mask), snr_db=20, seed=1)
    power = np.mean(np.abs(clean.kspace) ** 2)
    snr = 10 * np.log10(power / np.mean(np.abs(noisy.kspace - clean.kspace) ** 2))
    assert abs(snr - 20) < 0.3
    under = simulate_acquisition(img, maps, mask, snr_db=20, seed=1)
    assert np.all(under.kspace[:, ~mask] == 0)
    # single coil: data consistency puts the acquired samples back exactly
    single = simulate_acquisition(img, np.ones((1, 64, 64), np.complex64), mask, snr_db=20, seed=1)
    op = SenseOp(torch.ones(1, 64, 64, dtype=torch.complex64), torch.from_numpy(mask))
    y = torch.from_numpy(single.kspace)
    x = op.data_consistent(torch.zeros(img.shape, dtype=torch.complex64), y)
    assert torch.allclose(op(x), y, atol=1e-5)
    # multi-coil: the coil-combined result is closer to the data than the image it started from
    op = SenseOp(torch.from_numpy(maps), torch.from_numpy(mask))
    y = torch.from_numpy(under.kspace)
    start = torch.zeros(img.shape, dtype=torch.complex64)
    assert torch.linalg.vector_norm(op(op.data_consistent(start, y)) - y) < 0.5 * torch.linalg.vector_norm(y)


def test_espirit_maps_recover_image():
    pytest.importorskip("sigpy")
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    img = ((xx**2 + yy**2) < 0.7).astype(np.float32) * (1 + 0.3 * xx)
    mask = make_mask(img.shape, "random", 2, 0.4, seed=0).mask
    acq = simulate_acquisition(img, birdcage_maps(img.shape, 6), mask, phase=False, seed=0)
    maps = espirit_maps(acq.kspace, fully_sampled_center(mask))
    inside = img > 0
    np.testing.assert_allclose(np.sqrt((np.abs(maps) ** 2).sum(0))[inside], 1.0, atol=1e-3)
    # with a fully sampled acquisition the SENSE adjoint through ESPIRiT maps gives back |image|
    full = simulate_acquisition(img, birdcage_maps(img.shape, 6), np.ones_like(mask), phase=False, seed=0)
    combined = SenseOp(torch.from_numpy(maps), torch.ones(img.shape)).H(torch.from_numpy(full.kspace)).abs().numpy()
    assert np.abs(combined - img)[inside].mean() < 0.02


def test_grid_inr_lattice_path_equals_sampling():
    torch.manual_seed(0)
    for shape in [(17, 23), (7, 5, 6)]:
        model = MultiResGrid(len(shape), 2, levels=3, base_resolution=4, max_resolution=12)
        for g in model.grids:
            torch.nn.init.normal_(g)
        geo = Geometry(shape)
        assert torch.allclose(model.forward_lattice(shape), model(geo.network_grid()), atol=1e-5)
