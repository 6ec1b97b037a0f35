"""MRI physics: FFT convention, every Linop's adjoint, masks and the calibration box, coil maps, noise,
data consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medinr.mri.operators as ops
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.models import build_model
from medinr.models.mrgrid import MultiResGrid
from medinr.mri import SenseOp, fftc, ifftc, make_mask
from medinr.mri.coils import birdcage_maps, espirit_maps
from medinr.mri.masks import calibration_box, calibration_region, centre_box, fully_sampled_center, validate_mask
from medinr.mri.noise import NoiseEstimate, estimate_noise
from medinr.mri.simulate import simulate_acquisition


def _rand_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)).to(torch.complex128)


@pytest.mark.parametrize("ndim, shape", [(2, (3, 17, 16)), (3, (2, 5, 8, 7))])
def test_fft_matches_sigpy(ndim, shape):
    import sigpy as sp  # a core dependency: the baselines and the Poisson mask use it
    x = _rand_complex(*shape)
    axes = tuple(range(-ndim, 0))
    np.testing.assert_allclose(fftc(x, ndim).numpy(), sp.fft(x.numpy(), axes=axes), atol=1e-10)
    np.testing.assert_allclose(ifftc(x, ndim).numpy(), sp.ifft(x.numpy(), axes=axes), atol=1e-10)
    # orthonormal: Parseval, and the centre of k-space is index N // 2 (the DC of a constant image)
    np.testing.assert_allclose(torch.linalg.vector_norm(fftc(x, ndim)), torch.linalg.vector_norm(x), rtol=1e-10)
    const = fftc(torch.ones(9, 8, dtype=torch.complex128), 2)
    assert torch.argmax(const.abs()).item() == 4 * 8 + 4


def _linops() -> dict[str, object]:
    """Every kind of operator medinr builds (2D and 3D), for the adjoint and linearity checks."""
    out: dict[str, object] = {}
    for grid in [(24, 20), (8, 10, 12)]:
        maps = torch.from_numpy(birdcage_maps(grid, 4)).to(torch.complex128)
        mask = torch.from_numpy(make_mask(grid, "random", 2.0, 0.2, seed=3).mask)
        sense = SenseOp(maps, mask)
        tag = f"{len(grid)}d"
        out |= {
            f"sense_{tag}": sense,
            f"sense_adjoint_{tag}": sense.H,
            f"normal_{tag}": sense.H @ sense,
            f"fft_{tag}": ops.fft_op(maps.shape, len(grid)),
            f"multiply_{tag}": ops.multiply_op(grid, maps[0]),
            f"coils_{tag}": ops.coil_op(maps),
        }
    return out


LINOPS = _linops()


@pytest.mark.parametrize("name", sorted(LINOPS))
def test_every_linop_is_linear_with_a_true_adjoint(name):
    op = LINOPS[name]
    assert ops.adjoint_mismatch(op) < 1e-10, name
    assert ops.linearity_mismatch(op) < 1e-10, name


def test_linop_checks_catch_a_wrong_adjoint_and_wrong_shapes():
    good = ops.fft_op((6, 5), 2)
    wrong = ops.Linop((6, 5), (6, 5), good._forward, lambda y: y)  # identity is not the FFT's adjoint
    assert ops.adjoint_mismatch(wrong) > 1e-2
    affine = ops.Linop((3,), (3,), lambda x: x + 1, lambda y: y + 1)
    assert ops.linearity_mismatch(affine) > 1e-2
    with pytest.raises(ValueError, match="expects input shape"):
        good(torch.zeros(5, 6, dtype=torch.complex64))
    lying = ops.Linop((7,), (6,), lambda x: x, lambda y: y)  # claims 7 outputs, gives 6
    with pytest.raises(ValueError, match="should give shape"):
        lying(torch.zeros(6))
    with pytest.raises(ValueError, match="cannot compose"):
        good @ lying
    # SigPy's argument order: output shape first
    coils = ops.coil_op(torch.ones(3, 6, 5, dtype=torch.complex64))
    assert coils.oshape == (3, 6, 5) and coils.ishape == (6, 5)


def test_every_operator_factory_is_checked():
    """A new operator in medinr.mri.operators must join LINOPS (and so the adjoint check)."""
    factories = {n for n, f in vars(ops).items() if n.endswith("_op") and callable(f)} | {"SenseOp"}
    covered = {"fft_op", "multiply_op", "coil_op", "SenseOp"}
    assert factories == covered, factories ^ covered


def test_sense_coil_kspace_is_the_unmasked_forward_model():
    grid = (16, 12)
    maps = torch.from_numpy(birdcage_maps(grid, 3)).to(torch.complex128)
    mask = torch.from_numpy(make_mask(grid, "random", 2.0, 0.3, seed=1).mask)
    op, x = SenseOp(maps, mask), _rand_complex(*grid, seed=4)
    full = op.coil_kspace(x)
    assert torch.allclose(op(x), full * mask)
    assert torch.allclose(full, fftc(maps * x, 2))
    # the simulation goes through the same model: noise-free k-space equals A x of its truth
    acq = simulate_acquisition(np.abs(x.numpy()), maps.numpy(), mask.numpy(), snr_db=None, phase=False)
    expected = op(torch.from_numpy(acq.image).to(torch.complex128)).numpy()
    np.testing.assert_allclose(acq.kspace, expected, atol=1e-5 * np.abs(expected).max())


def test_centre_box_is_the_one_calibration_box():
    mask = make_mask((20, 40), "random", 4, 0.2, seed=0).mask
    width = fully_sampled_center(mask)
    box = centre_box(mask.shape, width)
    assert mask[box].all() and box[1].start == 20 - width // 2
    region = calibration_region(mask)
    assert region.all(axis=0).sum() == round(40 * 0.2) and not (region & ~mask).any()
    assert calibration_box(mask, cap=None) == (20, round(40 * 0.2))
    assert calibration_box(mask, cap=4) == (4, 4)


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


@pytest.mark.slow
def test_espirit_maps_recover_image():
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


def test_forward_lattice_switches_levels_off_and_recon_reads_it():
    """mrgrid's coarse-to-fine hook: ``active_levels`` zeroes the finer levels' features (the same as zeroing the
    grids), and the reconstruction's complex image is the model's two channels."""
    from medinr.mri.inr_recon import lattice_image

    torch.manual_seed(0)
    model = MultiResGrid(2, 2, levels=3, base_resolution=4, max_resolution=12)
    assert model.capacity_levels == 3 and build_model("siren", 2, 2, hidden=8, layers=1).capacity_levels == 1
    for g in model.grids:
        torch.nn.init.normal_(g)
    out = model.forward_lattice((17, 23))
    assert torch.allclose(lattice_image(model, (17, 23)), torch.complex(out[..., 0], out[..., 1]), atol=1e-6)
    coarse = model.forward_lattice((17, 23), active_levels=1)
    assert torch.equal(lattice_image(model, (17, 23), active=1), torch.complex(coarse[..., 0], coarse[..., 1]))
    # the same on any separable lattice (the reconstruction's coarse start samples the image off this lattice)
    axes = [torch.linspace(-1, 1, 17), torch.linspace(-1, 1, 23)]
    assert torch.allclose(model.forward_axes(axes, active_levels=1), coarse, atol=1e-5)
    assert torch.allclose(model.forward_axes(axes), out, atol=1e-5)
    assert [model.levels_within(n) for n in (3, 4, 7, 12, 100)] == [0, 1, 2, 3, 3]  # resolutions 4, 7, 12
    with torch.no_grad():
        for g in model.grids[1:]:
            g.zero_()
    assert torch.allclose(coarse, model(Geometry((17, 23)).network_grid()), atol=1e-5)


def test_whitening_as_production_does_it_commutes_with_sense():
    """``SenseOp(W S) x == W (SenseOp(S) x)`` for the coil mixing the reconstruction and the CS score use, and
    :func:`whiten_data` gives exactly that model of the whitened data."""
    from medinr.mri.inr_recon import whiten_data
    from medinr.mri.operators import coil_mix

    grid = (24, 20)
    maps = torch.from_numpy(birdcage_maps(grid, 4))
    mask = torch.from_numpy(make_mask(grid, "random", 2.0, 0.2, seed=3).mask)
    noise = NoiseEstimate(np.diag([1.0, 2.0, 3.0, 4.0]) + 0.3, 10, 1.0)
    w = torch.from_numpy(noise.whitening())
    x = _rand_complex(*grid, seed=2).to(torch.complex64)
    np.testing.assert_allclose(SenseOp(coil_mix(w, maps), mask)(x), coil_mix(w, SenseOp(maps, mask)(x)),
                               rtol=1e-5, atol=1e-5)
    kspace = SenseOp(maps, mask)(x) + 0.01 * _rand_complex(4, *grid, seed=5).to(torch.complex64)
    data = whiten_data(kspace, maps, mask.bool(), noise, whiten=True)
    np.testing.assert_allclose(data.kspace, coil_mix(w, kspace * mask), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.op(mask)(x / data.scale), coil_mix(w, SenseOp(maps, mask)(x)), rtol=1e-4,
                               atol=1e-4)
    plain = whiten_data(kspace, maps, mask.bool(), noise, whiten=False)  # --no-whiten: only 1 / sigma
    np.testing.assert_allclose(plain.kspace, kspace * mask / noise.sigma, rtol=1e-6, atol=1e-6)


def test_noise_estimate_and_whitening():
    rng = np.random.default_rng(0)
    grid, coils = (96, 96), 4
    mixing = np.eye(coils) + 0.4 * rng.standard_normal((coils, coils))
    cov = mixing @ mixing.T * 1e-4
    white = (rng.standard_normal((coils, *grid)) + 1j * rng.standard_normal((coils, *grid))) / np.sqrt(2)
    noise = np.einsum("cd,d...->c...", np.linalg.cholesky(cov), white)
    signal = np.zeros((coils, *grid), complex)
    signal[:, 40:56, 40:56] = 1.0  # signal near k = 0 only, as an object's k-space
    mask = make_mask(grid, "random", 3, 0.2, seed=0).mask
    est = estimate_noise((signal + noise) * mask, mask)
    np.testing.assert_allclose(est.covariance, cov, atol=0.15 * np.abs(cov).max())
    assert abs(est.shell_ratio - 1) < 0.15 and est.to_dict()["samples"] > 100
    w = est.whitening()
    whitened = np.einsum("cd,dn->cn", w, noise.reshape(coils, -1))
    np.testing.assert_allclose(whitened @ whitened.conj().T / whitened.shape[1], np.eye(coils), atol=0.15)
    with pytest.raises(MedinrError, match="noise"):
        estimate_noise(np.zeros((2, 8, 8), complex), np.ones((8, 8), bool))
    # noise-free, band-limited data: a floor far below the signal instead of a failure
    floor = estimate_noise(signal * mask, mask)
    assert floor.samples == 0 and 0 < floor.sigma < 1e-2 * np.abs(signal).max()


@pytest.mark.parametrize("grid, kind", [((24, 20), "random"), ((23, 19), "random"), ((24, 21), "poisson")])
def test_fast_residual_has_the_sense_residual_energy_on_every_readout(grid, kind):
    """The loss's residual (hybrid space along the fully sampled readout, centring folded into maps and data)
    has, readout by readout, the energy of ``SenseOp(maps, mask) x - kspace``: the fit and the held-out score
    see the same error as the operator the adjoint tests check."""
    from medinr.mri.inr_recon import whiten_data
    from medinr.mri.operators import coil_mix

    maps = torch.from_numpy(birdcage_maps(grid, 3))
    mask = torch.from_numpy(make_mask(grid, kind, 2.0, 0.2, seed=1).mask).bool()
    noise = NoiseEstimate(np.diag([1.0, 2.0, 3.0]) + 0.2, 10, 1.0)
    x = _rand_complex(*grid, seed=4).to(torch.complex64)
    kspace = SenseOp(maps, mask)(_rand_complex(*grid, seed=6).to(torch.complex64))
    data = whiten_data(kspace, maps, mask, noise, whiten=True)
    assert data.fft_axes == ((1,) if kind == "random" else (0, 1))  # a line mask is constant along the readout
    slow = data.op(mask)(x) - data.kspace
    fast = data.residual(x) * data.sample_weights(mask)

    def energy(r: torch.Tensor) -> torch.Tensor:  # per phase-encode line (whole readouts along axis 0)
        return (r.abs() ** 2).sum(dim=(0, 1))

    assert torch.count_nonzero(energy(slow)) > 1
    np.testing.assert_allclose(energy(fast), energy(slow), rtol=1e-4, atol=1e-3)
    w = torch.from_numpy(noise.whitening())
    np.testing.assert_allclose(data.kspace, coil_mix(w, kspace * mask), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("grid, kind", [((24, 20), "random"), ((23, 19), "random"), ((24, 21), "poisson")])
def test_written_out_data_term_matches_autograd(grid, kind):
    """The data term's written-out gradient (``WhitenedData.data_loss``) gives the value, residual and gradient of
    autograd through :meth:`WhitenedData.residual` and :func:`data_term`, for line and 2D masks, even and odd
    grids, and the density weights of a sample set."""
    from medinr.mri.inr_recon import data_term, whiten_data

    maps = torch.from_numpy(birdcage_maps(grid, 3))
    mask = torch.from_numpy(make_mask(grid, kind, 2.0, 0.2, seed=1).mask).bool()
    noise = NoiseEstimate(np.diag([1.0, 2.0, 3.0]) + 0.2, 10, 1.0)
    kspace = SenseOp(maps, mask)(_rand_complex(*grid, seed=6).to(torch.complex64))
    data = whiten_data(kspace, maps, mask, noise, whiten=True)
    weights = data.sample_weights(mask) * torch.rand(grid, generator=torch.Generator().manual_seed(2))
    voxels = float(np.prod(grid))
    parts = torch.randn(2, *grid, generator=torch.Generator().manual_seed(4), requires_grad=True)
    loss, resid = data.data_loss(torch.complex(parts[0], parts[1]), weights, voxels)
    (grad,) = torch.autograd.grad(loss * 3.0, parts)
    reference = data.residual(torch.complex(parts[0], parts[1]))
    expected = data_term(reference, weights, voxels)
    (expected_grad,) = torch.autograd.grad(expected * 3.0, parts)
    assert not resid.requires_grad and float(loss.detach()) > 0
    np.testing.assert_allclose(float(loss.detach()), float(expected.detach()), rtol=1e-5)
    np.testing.assert_allclose(resid, reference.detach(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6 * float(expected_grad.abs().max()))


def test_cs_warm_start_is_used_and_converges_to_the_same_solution():
    """A warm start from a solution at a neighbouring lambda changes the first iterate (SigPy takes ``x``)
    and lands where a long cold run does; the start array is not modified."""
    from medinr.mri.baselines import cs_reconstruct

    grid = (32, 32)
    maps = birdcage_maps(grid, 4)
    mask = make_mask(grid, "random", 3.0, 0.15, seed=2).mask
    truth = np.zeros(grid, np.complex64)
    truth[8:24, 10:22] = 1.0
    kspace = SenseOp(torch.from_numpy(maps), torch.from_numpy(mask))(torch.from_numpy(truth)).numpy()
    long = cs_reconstruct(kspace, maps, mask, "l1wavelet", 1e-3, 300)
    near = cs_reconstruct(kspace, maps, mask, "l1wavelet", 3e-3, 300)
    start = near.copy()
    warm = cs_reconstruct(kspace, maps, mask, "l1wavelet", 1e-3, 30, start)
    cold = cs_reconstruct(kspace, maps, mask, "l1wavelet", 1e-3, 30)
    np.testing.assert_array_equal(start, near)
    assert np.linalg.norm(warm - long) < np.linalg.norm(cold - long)


def test_the_numpy_soft_threshold_is_sigpys_and_is_put_back_after_a_run():
    """SigPy's CS runs with :func:`soft_threshold` in place of its Numba ufunc (compiled anew in every process):
    the same values and result type, zero at zero, finite on subnormal magnitudes (where dividing by |x| in
    float32 overflows), and SigPy's own function is back after the run."""
    from sigpy import thresh

    from medinr.mri.baselines import cs_reconstruct, soft_threshold

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))).astype(np.complex64)
    x[0, :4] = 0
    x[1, :4] = np.complex64(2e-39 + 1e-39j)  # subnormal in float32
    for lamda in (0.0, 0.3, 1.7):
        ours, sigpys = soft_threshold(lamda, x), thresh._soft_thresh(lamda, x)
        assert ours.dtype == sigpys.dtype == np.complex128 and np.isfinite(ours).all()
        np.testing.assert_allclose(ours, sigpys, rtol=0, atol=1e-6)
        assert (ours[0, :4] == 0).all() and (lamda == 0 or (ours[1, :4] == 0).all())
    original = thresh._soft_thresh
    maps = np.ones((2, 16, 16), np.complex64) / np.sqrt(2)
    mask = np.zeros((16, 16), bool)
    mask[:, ::2] = True
    k = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64) * mask
    for method in ("l1wavelet", "tv"):
        assert np.isfinite(cs_reconstruct(k, maps, mask, method, 1e-2, 10)).all()
    assert thresh._soft_thresh is original


def _band_limited(shape: tuple[int, ...], band: float, leading: int = 0, seed: int = 0) -> torch.Tensor:
    """A random complex array whose centred k-space is zero outside the central ``band`` of each of its last axes."""
    k = _rand_complex(*((leading,) if leading else ()), *shape, seed=seed).to(torch.complex128)
    keep = torch.ones(shape, dtype=torch.bool)
    for a, n in enumerate(shape):
        m = max(1, int(n * band))
        inside = torch.zeros(n, dtype=torch.bool)
        inside[n // 2 - m // 2: n // 2 - m // 2 + m] = True
        keep &= inside.reshape([-1 if b == a else 1 for b in range(len(shape))])
    return ifftc(k * keep, len(shape))


@pytest.mark.parametrize("grid, kind", [((32, 28), "random"), ((30, 26), "random"), ((24, 20), "poisson"),
                                        ((20, 24, 18), "poisson")])
def test_the_coarse_view_is_the_centre_of_k_space_of_the_image_sampled_every_second_voxel(grid, kind):
    """``WhitenedData.coarse``: for maps and an image band-limited to a quarter of k-space (their product to half),
    the coarse data's residual of the image's samples every second voxel is the fine residual on the window of
    k-space, sample by sample, and the view's axes are those samples' network coordinates."""
    from medinr.models.base import lattice_coords
    from medinr.mri.inr_recon import whiten_data

    maps = _band_limited(grid, 0.25, leading=3, seed=2).to(torch.complex64)
    mask = torch.from_numpy(make_mask(grid, kind, 2.0, 0.2, seed=1).mask).bool()
    x = _band_limited(grid, 0.25, seed=4).to(torch.complex64)
    kspace = SenseOp(maps, mask)(_rand_complex(*grid, seed=6).to(torch.complex64))
    data = whiten_data(kspace, maps, mask, NoiseEstimate(np.diag([1.0, 2.0, 3.0]), 10, 1.0), whiten=True)
    view = data.coarse(mask, 0.5)
    assert view is not None and [len(a) for a in view.axes] == [n // 2 for n in grid]
    # the samples every second voxel: index 2j, or 2j + 1 where n / 2 is odd (the centre of k-space stays at n // 2)
    starts = [(n // 2) % 2 for n in grid]
    coarse_x = x[tuple(slice(s, None, 2) for s in starts)]
    fine_coords = lattice_coords(grid)
    for a, (axis, s) in enumerate(zip(view.axes, starts)):
        line = fine_coords[(*([0] * a), slice(s, None, 2), *([0] * (len(grid) - a - 1)), a)]
        np.testing.assert_allclose(axis, line, atol=1e-6)
    fine = (data.op(mask)(x) - data.kspace)[(slice(None), *view.window)]
    coarse = view.data.op(mask[view.window])(coarse_x) - view.data.kspace
    np.testing.assert_allclose(coarse, fine, atol=2e-4 * float(fine.abs().max()))
    # the prepared (hybrid) residual the fit uses has the same energy readout by readout
    np.testing.assert_allclose((view.data.residual(coarse_x).abs() ** 2 * mask[view.window]).sum(),
                               (coarse.abs() ** 2).sum(), rtol=1e-4)
    small = whiten_data(kspace[:, :12, :12], maps[:, :12, :12], mask[:12, :12], NoiseEstimate(np.eye(3), 10, 1.0),
                        whiten=True)
    assert small.coarse(mask[:12, :12], 0.5) is None
