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


#: SSIM's Gaussian window (sigma 1.5, fastMRI's) spans this many voxels per axis.
GAUSSIAN_WINDOW = 11
#: Below this many voxels on an in-plane axis SSIM is not defined (no window of local statistics fits).
MIN_SSIM_AXIS = 3


def ssim(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Structural similarity (scikit-image), averaged inside ``mask`` if given; None where it is not defined.

    Images with every axis of at least :data:`GAUSSIAN_WINDOW` voxels use the Gaussian window (sigma 1.5, the
    fastMRI convention). A 3D image with a thinner axis (a multi-slice stack, e.g. 256 x 256 x 8) is scored as
    the mean of 2D SSIM over its slices along its thinnest axis; a small 2D image (slice) uses a uniform window
    of the largest odd size that fits (at least 3). With an in-plane axis under :data:`MIN_SSIM_AXIS` voxels
    the result is None ("not defined"; ``null`` in metrics JSON). The data range is the reference's maximum
    over the whole image in every case.
    """
    ref, est = np.abs(np.asarray(reference)).astype(np.float64), np.abs(np.asarray(estimate)).astype(np.float64)
    _check(ref, est, mask)
    smap = _ssim_map(ref, est, float(ref.max()))
    if smap is None:
        return None
    return float(smap[mask].mean() if mask is not None else smap.mean())


def _ssim_map(ref: np.ndarray, est: np.ndarray, data_range: float) -> np.ndarray | None:
    """The local SSIM map of the image (see :func:`ssim` for the window), or None when none fits."""
    if ref.ndim not in (2, 3):
        return None
    if min(ref.shape) >= GAUSSIAN_WINDOW:
        _, smap = structural_similarity(
            ref, est, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            full=True,
        )
        return smap
    if ref.ndim == 3:  # slices along the thinnest axis, each a 2D image
        axis = int(np.argmin(ref.shape))
        maps = [_ssim_map(a, b, data_range) for a, b in zip(np.moveaxis(ref, axis, 0), np.moveaxis(est, axis, 0))]
        return None if any(m is None for m in maps) else np.moveaxis(np.stack(maps), 0, axis)
    width = min(ref.shape) - (1 - min(ref.shape) % 2)  # the largest odd window that fits
    if width < MIN_SSIM_AXIS:
        return None
    _, smap = structural_similarity(
        ref, est, data_range=data_range, win_size=width, gaussian_weights=False, use_sample_covariance=False,
        full=True,
    )
    return smap


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


def image_metrics(
    reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float | None]:
    """PSNR, SSIM and NMSE over the whole image, and inside ``mask`` (default: :func:`tissue_mask`).

    SSIM is None where it is not defined (an in-plane axis under :data:`MIN_SSIM_AXIS` voxels, see :func:`ssim`).
    """
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
