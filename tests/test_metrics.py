"""Image metrics (medinr/metrics.py): the fastMRI PSNR/SSIM conventions, masks and edge cases, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medinr.errors import MedinrError
from medinr.metrics import image_metrics, nmse, psnr, ssim, tissue_mask


def test_psnr_uses_the_reference_maximum_as_peak() -> None:
    ref = np.zeros((10, 10))
    ref[0, 0] = 4.0
    est = ref + 0.1
    assert psnr(ref, est) == pytest.approx(10 * math.log10(16 / 0.01))  # est's own maximum 4.1 would give 32.26
    # the estimate's own maximum does not matter, only the reference's: the same error with an estimate that
    # peaks at 3.9 instead of 4.1 scores the same
    below = ref - 0.1
    assert np.abs(below).max() == pytest.approx(3.9) and np.mean((np.abs(below) - ref) ** 2) == pytest.approx(0.01)
    assert psnr(ref, below) == pytest.approx(psnr(ref, est))
    # the peak is the maximum, not the range (max - min) of the reference
    offset = ref + 3.0  # values 3 .. 7: range 4, maximum 7
    assert psnr(offset, offset + 0.1) == pytest.approx(10 * math.log10(49 / 0.01))
    assert psnr(ref * 2, est * 2) == pytest.approx(psnr(ref, est))  # scale invariant
    assert psnr(ref, ref) == math.inf


def test_psnr_inside_a_mask_averages_the_error_there_with_the_whole_image_peak() -> None:
    ref = np.full((4, 4), 2.0)
    est = ref.copy()
    est[0] += 1.0  # error 1 on the first row only
    mask = np.zeros((4, 4), dtype=bool)
    mask[0] = True
    assert psnr(ref, est, mask) == pytest.approx(10 * math.log10(4 / 1.0))
    assert psnr(ref, est, ~mask) == math.inf
    assert psnr(ref, est) == pytest.approx(10 * math.log10(4 / 0.25))


def test_metrics_compare_magnitudes_of_complex_images() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((8, 8)) + 1j * rng.random((8, 8))
    rotated = ref * np.exp(1j * 0.7)  # same magnitude, other phase
    assert psnr(ref, rotated) > 200  # equal up to rounding
    assert nmse(ref, rotated) == pytest.approx(0.0, abs=1e-12)


def test_nmse_by_hand_and_inside_a_mask() -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    est = np.array([[1.0, 2.0], [3.0, 2.0]])
    assert nmse(ref, est) == pytest.approx(4.0 / 30.0)
    mask = np.array([[False, False], [True, True]])
    assert nmse(ref, est, mask) == pytest.approx(4.0 / 25.0)


def test_ssim_is_one_for_equal_images_and_drops_with_noise() -> None:
    rng = np.random.default_rng(1)
    ref = np.clip(np.cumsum(rng.random((32, 32)), axis=1) / 16, 0, None)
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = ref + rng.normal(0, 0.2, ref.shape)
    worse = ref + rng.normal(0, 0.6, ref.shape)
    assert 0 < ssim(ref, worse) < ssim(ref, noisy) < 1
    mask = np.zeros(ref.shape, dtype=bool)
    mask[8:24, 8:24] = True
    assert ssim(ref, noisy, mask) != pytest.approx(ssim(ref, noisy))


def test_shape_and_mask_errors_are_clear() -> None:
    a = np.ones((4, 4))
    with pytest.raises(MedinrError, match="shape mismatch"):
        psnr(a, np.ones((4, 5)))
    with pytest.raises(MedinrError, match="mask shape"):
        psnr(a, a, np.ones((3, 3), dtype=bool))
    with pytest.raises(MedinrError, match="empty"):
        ssim(a, a, np.zeros((4, 4), dtype=bool))


def test_tissue_mask_keeps_the_largest_bright_blob_with_holes_filled() -> None:
    image = np.zeros((40, 40))
    image[5:30, 5:30] = 1.0
    image[15:18, 15:18] = 0.0  # a hole inside the object
    image[35:38, 35:38] = 1.0  # a small separate bright blob
    mask = tissue_mask(image)
    assert mask[16, 16] and mask[6:29, 6:29].all()  # the opening may round the corners only
    assert not mask[36, 36] and not mask[0, 0]


def test_image_metrics_has_whole_and_tissue_entries(coronal_64: np.ndarray) -> None:
    est = coronal_64 + 0.01
    out = image_metrics(coronal_64, est)
    assert set(out) == {"psnr", "ssim", "nmse", "psnr_tissue", "ssim_tissue", "nmse_tissue"}
    # a constant error: PSNR is the same over any region, and it is what the peak says
    assert out["psnr"] == pytest.approx(out["psnr_tissue"])
    assert out["psnr"] == pytest.approx(20 * math.log10(coronal_64.max() / 0.01), rel=1e-4)
