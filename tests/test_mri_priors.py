"""The INR reconstruction's image priors (medinr.mri.priors): the undecimated Haar penalty against PyWavelets'
decimated transform averaged over cycle spins, its shift invariance, and TV on a known image."""

import numpy as np
import pytest
import pywt
import torch

from medinr.mri.priors import total_variation, wavelet_l1


def _interior_image(shape: tuple[int, ...], margin: int, seed: int = 0) -> np.ndarray:
    """A complex random image that is zero within ``margin`` voxels of its border."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.complex64)
    inner = tuple(slice(margin, n - margin) for n in shape)
    image[inner] = rng.standard_normal(image[inner].shape) + 1j * rng.standard_normal(image[inner].shape)
    return image


def _cycle_spun_decimated(image: np.ndarray, levels: int) -> float:
    """PyWavelets' decimated Haar detail L1 (complex modulus), averaged over every shift of the image by
    0 .. 2^levels - 1 voxels per axis, over the number of voxels."""
    span = 2**levels
    totals = []
    for shift in np.ndindex(*(span,) * image.ndim):
        moved = np.roll(image, shift, axis=tuple(range(image.ndim)))
        re = pywt.wavedecn(moved.real, "haar", mode="periodization", level=levels)
        im = pywt.wavedecn(moved.imag, "haar", mode="periodization", level=levels)
        totals.append(sum(np.abs(re_level[band] + 1j * im_level[band]).sum()
                          for re_level, im_level in zip(re[1:], im[1:]) for band in re_level))
    return float(np.mean(totals)) / image.size


@pytest.mark.parametrize("shape", [(48, 40), (24, 32, 24)])
def test_wavelet_l1_is_the_decimated_haar_penalty_averaged_over_shifts(shape):
    image = _interior_image(shape, margin=8)
    ours = float(wavelet_l1(torch.from_numpy(image), levels=3, eps=0.0))
    assert ours == pytest.approx(_cycle_spun_decimated(image, 3), rel=1e-5)


def test_wavelet_l1_does_not_depend_on_where_an_edge_falls():
    """A block costs the same one voxel further on (the decimated Haar transform sees an edge at level 1 only
    where it splits a pair of voxels)."""
    costs = []
    for edge in (20, 21):
        image = np.zeros((48, 48), dtype=np.complex64)
        image[10:38, edge:edge + 17] = 1.0
        costs.append(float(wavelet_l1(torch.from_numpy(image), eps=0.0)))
    assert costs[0] == pytest.approx(costs[1], rel=1e-6)
    assert costs[0] > 0


def test_wavelet_l1_gradient_is_its_derivative():
    """The penalty's backward is written out (the transform's adjoint): torch's numerical gradient check, complex
    and real, 2D and 3D, odd sizes (eps large enough for the finite differences)."""
    rng = np.random.default_rng(1)
    for shape in [(12, 9), (7, 6, 9)]:
        z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        image = torch.tensor(z, dtype=torch.complex128, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: wavelet_l1(x, eps=1e-3), (image,))
        real = torch.tensor(z.real, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: wavelet_l1(x, eps=1e-3), (real,))


def test_wavelet_l1_levels_and_constants():
    # a constant image has no detail at any level
    assert float(wavelet_l1(torch.ones(16, 16, dtype=torch.complex64), eps=0.0)) == 0.0
    # a single bright voxel far from the border: each level's three bands (sums and differences of neighbours
    # 1, 2 and 4 voxels apart) see it through every coefficient whose footprint holds it
    image = torch.zeros(32, 32, dtype=torch.complex64)
    image[16, 16] = 1.0
    per_level = [float(wavelet_l1(image, levels=k, eps=0.0)) * image.numel() for k in (1, 2, 3)]
    # level 0: four coefficients of each band hold the voxel, each of modulus 1/2, weight 1/4: 3 x 4 x 1/2 / 4
    assert per_level[0] == pytest.approx(1.5)
    assert per_level[0] < per_level[1] < per_level[2]
    # levels deeper than the image allows stop where the image is too small
    assert float(wavelet_l1(image[:3, :3], levels=5)) == pytest.approx(float(wavelet_l1(image[:3, :3], levels=2)))


def test_total_variation_of_a_ramp():
    """A ramp of slope 1 per voxel along one axis: |grad| = 1 everywhere it is measured."""
    ramp = torch.arange(10, dtype=torch.float32)[:, None].expand(10, 6).to(torch.complex64)
    assert float(total_variation(ramp, eps=0.0)) == pytest.approx(1.0)
