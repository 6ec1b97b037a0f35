"""Image-quality metrics with the fastMRI conventions: PSNR and SSIM use the reference's maximum as range."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from medinr.errors import MedinrError


def _check(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None) -> None:
    if reference.shape != estimate.shape:
        raise MedinrError(f"shape mismatch: reference {reference.shape} vs estimate {estimate.shape}")
    if mask is not None and mask.shape != reference.shape:
        raise MedinrError(f"mask shape {mask.shape} does not match image shape {reference.shape}")
    if mask is not None and not np.any(mask):
        raise MedinrError("the metric mask is empty")


def psnr(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB; data range = max |reference| over the whole image.

    With ``mask`` the mean squared error is taken inside the mask only (same data range).
    """
    ref, est = np.abs(np.asarray(reference)).astype(np.float64), np.abs(np.asarray(estimate)).astype(np.float64)
    _check(ref, est, mask)
    err = (ref - est) ** 2
    mse = float(err[mask].mean() if mask is not None else err.mean())
    peak = float(ref.max())
    if mse == 0.0:
        return float("inf")
    return 10.0 * np.log10(peak**2 / mse)


def nmse(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised mean squared error ||ref - est||^2 / ||ref||^2 (magnitudes)."""
    ref, est = np.abs(np.asarray(reference)).astype(np.float64), np.abs(np.asarray(estimate)).astype(np.float64)
    _check(ref, est, mask)
    sel = mask if mask is not None else slice(None)
    return float(np.sum((ref - est)[sel] ** 2) / max(np.sum(ref[sel] ** 2), 1e-30))


def ssim(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Structural similarity (scikit-image, Gaussian window), averaged inside ``mask`` if given."""
    ref, est = np.abs(np.asarray(reference)).astype(np.float64), np.abs(np.asarray(estimate)).astype(np.float64)
    _check(ref, est, mask)
    _, smap = structural_similarity(
        ref, est, data_range=float(ref.max()), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    return float(smap[mask].mean() if mask is not None else smap.mean())


def tissue_mask(image: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Foreground mask: magnitude above ``fraction`` of the robust maximum, holes filled, largest blob."""
    mag = np.abs(np.asarray(image)).astype(np.float64)
    thr = fraction * np.percentile(mag, 99.9)
    mask = ndimage.binary_opening(mag > thr, iterations=1)
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    if not mask.any():
        mask = mag > thr
    return mask


def image_metrics(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """PSNR, SSIM and NMSE over the whole image, and inside ``mask`` (default: :func:`tissue_mask`)."""
    if mask is None:
        mask = tissue_mask(reference)
    return {
        "psnr": psnr(reference, estimate),
        "ssim": ssim(reference, estimate),
        "nmse": nmse(reference, estimate),
        "psnr_tissue": psnr(reference, estimate, mask),
        "ssim_tissue": ssim(reference, estimate, mask),
        "nmse_tissue": nmse(reference, estimate, mask),
    }
