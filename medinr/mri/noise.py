"""Noise of acquired k-space: the coil noise covariance estimated from the outer k-space, and whitening.

Receiver noise is white in k-space but correlated across coils; the signal of an object concentrates near
k = 0. The acquired samples in the outer shell of k-space (max-norm radius >= ``outer`` of the half width)
are therefore mostly noise, and their coil covariance is the estimate. A trimmed estimator drops samples
that look like signal (whitened power far above what noise of that covariance gives) and corrects for the
trimming. Where the object has strong signal out to the edge of k-space (sharp synthetic images, no
receiver noise) the estimate is an upper bound on the noise: it is reported with the ratio of an inner
shell's level to the outer one (near 1 when the shell holds noise only).

Whitening ``W = L^{-1}`` (``Sigma = L L^H``) makes the noise of ``W y`` white with unit variance; it is a coil
mixing (:func:`medinr.mri.operators.coil_mix`), so the whitened SENSE model is ``SenseOp(W S, mask)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammainc, gammaincinv  # not scipy.stats: 0.3 s more to import, for two values

from medinr.errors import MedinrError


@dataclass
class NoiseEstimate:
    """Coil noise covariance of a scan (per complex k-space sample, in the k-space's units).

    Attributes
    ----------
    covariance : complex ndarray ``(C, C)``
    samples : int
        Outer k-space samples it was estimated from.
    shell_ratio : float
        Noise level of an inner shell over the outer one's: near 1 if the outer shell is noise, above
        about 1.5 when signal leaks into it (then the estimate is an upper bound).
    method : str
    """

    covariance: np.ndarray
    samples: int
    shell_ratio: float
    method: str = "trimmed covariance of the outer k-space shell"

    @property
    def sigma(self) -> float:
        """Root-mean-square noise standard deviation over coils (per complex sample)."""
        return float(np.sqrt(np.mean(np.real(np.diag(self.covariance)))))

    def whitening(self) -> np.ndarray:
        """``W`` with ``W Sigma W^H = I`` (inverse Cholesky factor), complex ``(C, C)``."""
        cov = self.covariance + 1e-9 * np.real(np.trace(self.covariance)) / len(self.covariance) * np.eye(
            len(self.covariance)
        )
        return np.linalg.inv(np.linalg.cholesky(cov)).astype(np.complex64)

    def to_dict(self) -> dict[str, Any]:
        std = np.sqrt(np.real(np.diag(self.covariance)))
        corr = np.abs(self.covariance) / np.maximum(np.outer(std, std), 1e-300)
        off = corr[~np.eye(len(corr), dtype=bool)]
        return {
            "sigma": self.sigma,
            "sigma_per_coil": std.tolist(),
            "max_coil_correlation": float(off.max()) if off.size else 0.0,
            "samples": self.samples,
            "shell_ratio": self.shell_ratio,
            "method": self.method,
        }


def _shell(shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Samples whose max-norm k-space radius (1 at the edge) lies in [lo, hi)."""
    axes = [np.abs(np.arange(n) - n // 2) / max(n / 2, 1) for n in shape]
    radius = np.zeros(shape)
    for a, r in enumerate(axes):
        radius = np.maximum(radius, r.reshape([-1 if i == a else 1 for i in range(len(shape))]))
    return (radius >= lo) & (radius < hi)


def trimmed_covariance(samples: np.ndarray, keep: float = 0.9, iterations: int = 4) -> np.ndarray:
    """Covariance ``(C, C)`` of complex samples ``(C, n)`` robust to a minority of large (signal) samples.

    Each pass whitens with the current estimate, keeps the samples whose power lies below the ``keep``
    quantile of the noise distribution (Gamma(C, 1) for complex Gaussian noise), and rescales by the mean
    of that truncated distribution.
    """
    c = samples.shape[0]
    cov = samples @ samples.conj().T / samples.shape[1]
    cut = gammaincinv(c, keep)  # the keep quantile of Gamma(c, 1)
    # E[q | q < cut] / E[q] for q ~ Gamma(c, 1): the shrinkage that trimming causes (regularised lower gamma)
    shrink = gammainc(c + 1, cut) / gammainc(c, cut)
    for _ in range(iterations):
        chol = np.linalg.cholesky(cov + 1e-12 * np.real(np.trace(cov)) * np.eye(c))
        power = np.sum(np.abs(np.linalg.solve(chol, samples)) ** 2, axis=0)
        kept = samples[:, power < cut]
        if kept.shape[1] < 4 * c:
            break
        cov = kept @ kept.conj().T / kept.shape[1] / shrink
    return cov


def estimate_noise(kspace: np.ndarray, mask: np.ndarray, outer: float = 0.85) -> NoiseEstimate:
    """Estimate the coil noise covariance from the acquired samples of the outer k-space shell.

    Parameters
    ----------
    kspace : complex ndarray ``(C, *grid)``
        Acquired k-space (zeros elsewhere), any units.
    mask : bool ndarray ``grid``
    outer : float
        Inner edge of the shell, as a fraction of the half width of k-space (max-norm radius).

    Returns
    -------
    NoiseEstimate
    """
    k = np.asarray(kspace, np.complex128)
    mask = np.asarray(mask, bool)
    grid = mask.shape
    shell = _shell(grid, outer, 1.01) & mask
    if shell.sum() < 8 * k.shape[0]:
        shell = _shell(grid, 0.5, 1.01) & mask
    if shell.sum() < 2 * k.shape[0]:
        raise MedinrError("too few acquired samples in the outer k-space to estimate the noise level")
    if not np.isfinite(k).all() or not np.abs(k).max() > 0:
        raise MedinrError("the acquired k-space is zero or not finite: the noise level cannot be estimated")
    if not np.abs(k[:, shell]).max() > 0:  # noise-free data: a floor far below the signal keeps the units
        floor = 1e-3 * np.sqrt(np.mean(np.abs(k[:, mask]) ** 2))
        return NoiseEstimate(floor**2 * np.eye(k.shape[0]), 0, 1.0, "outer k-space is zero: floor at 1e-3 of the RMS")
    cov = trimmed_covariance(k[:, shell])
    inner = _shell(grid, 0.6, outer) & mask
    ratio = 1.0
    if inner.sum() >= 8 * k.shape[0]:
        inner_cov = trimmed_covariance(k[:, inner])
        ratio = float(np.sqrt(np.real(np.trace(inner_cov)) / max(np.real(np.trace(cov)), 1e-300)))
    return NoiseEstimate(cov.astype(np.complex128), int(shell.sum()), ratio)


# --- Noise of non-Cartesian data and of noise-adjustment scans (used by the MRD reader and the non-Cartesian
# --- reconstruction; estimate_noise above stays the Cartesian one).


def noise_from_scan(samples: np.ndarray, dwell_ratio: float = 1.0) -> NoiseEstimate:
    """Coil noise covariance from a noise-adjustment scan (samples of pure receiver noise, no RF).

    Parameters
    ----------
    samples : complex ndarray ``(C, n)``
        The noise scan's samples (every noise acquisition of the file, concatenated).
    dwell_ratio : float
        Dwell time of the noise scan over that of the data (``sample_time_us``). Noise power per sample grows
        with the receiver bandwidth (1 / dwell), so the covariance is scaled by this ratio to be the data's.
        (The receiver's relative noise bandwidth, a correction of a few per cent that some vendors state in
        the header, is not applied.)

    Returns
    -------
    NoiseEstimate
        The sample covariance (``shell_ratio`` 1: a noise scan holds no signal).
    """
    s = np.asarray(samples, np.complex128)
    if s.ndim != 2 or s.shape[1] < 2 * s.shape[0]:
        raise MedinrError(
            f"the noise-adjustment scan holds {s.shape[-1]} samples for {s.shape[0]} coils: too few to estimate "
            "the coil noise covariance"
        )
    if not np.isfinite(s).all() or not np.abs(s).max() > 0:
        raise MedinrError("the noise-adjustment scan is zero or not finite")
    if not dwell_ratio > 0:
        raise MedinrError(f"the dwell-time ratio of the noise scan must be positive, got {dwell_ratio}")
    cov = s @ s.conj().T / s.shape[1] * float(dwell_ratio)
    return NoiseEstimate(cov, int(s.shape[1]), 1.0, "noise-adjustment scan (sample covariance)")


def estimate_noise_samples(samples: np.ndarray, radius: np.ndarray, outer: float = 0.85) -> NoiseEstimate:
    """Coil noise covariance from the samples of a non-Cartesian acquisition in the outer k-space shell.

    The non-Cartesian counterpart of :func:`estimate_noise`: the same trimmed estimator on the samples whose
    normalised radius (:func:`medinr.mri.trajectories.radius`, 1 at the edge of k-space) is at least ``outer``,
    with the same inner-shell ratio as a check that the shell holds noise.

    Parameters
    ----------
    samples : complex ndarray ``(C, ...)``
        Acquired samples (e.g. ``(C, readouts, samples)``).
    radius : ndarray, the shape of ``samples[0]``
    outer : float
    """
    k = np.asarray(samples, np.complex128).reshape(samples.shape[0], -1)
    r = np.asarray(radius, np.float64).reshape(-1)
    if not np.isfinite(k).all() or not np.abs(k).max() > 0:
        raise MedinrError("the acquired k-space is zero or not finite: the noise level cannot be estimated")
    shell = r >= outer
    if shell.sum() < 8 * k.shape[0]:
        shell = r >= 0.5
    if shell.sum() < 2 * k.shape[0]:
        raise MedinrError("too few acquired samples in the outer k-space to estimate the noise level")
    if not np.abs(k[:, shell]).max() > 0:
        floor = 1e-3 * np.sqrt(np.mean(np.abs(k) ** 2))
        return NoiseEstimate(floor**2 * np.eye(k.shape[0]), 0, 1.0, "outer k-space is zero: floor at 1e-3 of the RMS")
    cov = trimmed_covariance(k[:, shell])
    inner = (r >= 0.6) & (r < outer)
    ratio = 1.0
    if inner.sum() >= 8 * k.shape[0]:
        inner_cov = trimmed_covariance(k[:, inner])
        ratio = float(np.sqrt(np.real(np.trace(inner_cov)) / max(np.real(np.trace(cov)), 1e-300)))
    return NoiseEstimate(cov, int(shell.sum()), ratio, "trimmed covariance of the outer k-space shell (non-Cartesian)")
