"""Baselines on the same data and mask: zero-filled SENSE adjoint and compressed sensing (SigPy L1-wavelet, TV).

SigPy is optional (extras ``bench``/``dev``): it is imported only when a CS baseline runs. Lambda is swept over
a grid; which lambda is kept is the caller's choice (by ground truth in the benchmark, by held-out k-space
samples in the command line).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.intensity import IntensityScale
from medinr.mri.operators import SenseOp

#: The lambda grid (for k-space normalised so that the zero-filled image peaks near 1).
DEFAULT_LAMBDAS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
CS_METHODS = ("l1wavelet", "tv")


def zero_filled(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero-filled reconstruction: the adjoint of the SENSE operator (coil-combined with the maps)."""
    op = SenseOp(torch.from_numpy(np.asarray(maps, np.complex64)), torch.from_numpy(np.asarray(mask)))
    return op.H(torch.from_numpy(np.asarray(kspace, np.complex64))).numpy()


def _sigpy_app():
    try:
        import sigpy.mri.app as app
    except ImportError:
        raise MedinrError("the CS baselines need SigPy: pip install 'medinr[bench]' (or sigpy)") from None
    return app


def cs_reconstruct(
    kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, method: str, lamda: float, max_iter: int = 100
) -> np.ndarray:
    """One CS reconstruction with SigPy (``L1WaveletRecon`` or ``TotalVariationRecon``), on the CPU.

    Parameters
    ----------
    kspace : complex ndarray ``(C, *grid)``
        Acquired k-space, normalised (see :func:`normalised`); zeros elsewhere.
    maps : complex ndarray ``(C, *grid)``
    mask : ndarray ``grid``
    method : {'l1wavelet', 'tv'}
    lamda : float
        Regularisation weight.
    max_iter : int

    Returns
    -------
    complex ndarray ``grid``
    """
    app = _sigpy_app()
    weights = np.asarray(mask, np.float32)
    ksp = np.asarray(kspace, np.complex64) * weights
    mps = np.asarray(maps, np.complex64)
    if method == "l1wavelet":
        solver = app.L1WaveletRecon(ksp, mps, lamda, weights=weights, max_iter=max_iter, show_pbar=False)
    elif method == "tv":
        solver = app.TotalVariationRecon(ksp, mps, lamda, weights=weights, max_iter=max_iter, show_pbar=False)
    else:
        raise MedinrError(f"unknown CS method '{method}' ({', '.join(CS_METHODS)})")
    return np.asarray(solver.run()).astype(np.complex64)


def normalisation(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> float:
    """Robust maximum (99.9th percentile) of the zero-filled magnitude: the unit CS lambdas are quoted in."""
    return zero_filled_scale(zero_filled(kspace, maps, mask))


def zero_filled_scale(image: np.ndarray) -> float:
    """The robust maximum of a zero-filled image, the unit both the INR and CS reconstructions work in."""
    try:
        return IntensityScale.robust(image).scale
    except MedinrError:
        raise MedinrError("the acquired k-space is zero or not finite") from None


@dataclass
class SweepResult:
    """Every lambda of a sweep with its image (input units), wall time and selection score."""

    method: str
    lambdas: list[float]
    images: list[np.ndarray]
    seconds: list[float]
    scores: list[float] = field(default_factory=list)
    chosen: int = 0
    criterion: str = ""

    @property
    def image(self) -> np.ndarray:
        return self.images[self.chosen]

    @property
    def lamda(self) -> float:
        return self.lambdas[self.chosen]


def cs_sweep(
    kspace: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    method: str,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    max_iter: int = 100,
    score: Callable[[np.ndarray], float] | None = None,
    criterion: str = "",
) -> SweepResult:
    """Run a CS method for every lambda and keep the one with the lowest ``score(image)``.

    ``score`` receives the image in the input's units (e.g. minus PSNR against a ground truth, or the
    error on held-out k-space samples). Lambdas are relative to the normalised data (see
    :func:`normalisation`).
    """
    scale = normalisation(kspace, maps, mask)
    result = SweepResult(method, list(lambdas), [], [], criterion=criterion)
    for lamda in lambdas:
        t0 = time.perf_counter()
        image = cs_reconstruct(np.asarray(kspace) / scale, maps, mask, method, lamda, max_iter) * scale
        result.seconds.append(time.perf_counter() - t0)
        result.images.append(image)
        result.scores.append(float(score(image)) if score is not None else 0.0)
    result.chosen = int(np.argmin(result.scores)) if score is not None else len(lambdas) // 2
    return result


def holdout_split(mask: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split acquired samples outside the calibration box into (train mask, held-out mask)."""
    from medinr.mri.masks import fully_sampled_center

    mask = np.asarray(mask, bool)
    width = fully_sampled_center(mask)
    centre = np.zeros_like(mask)
    centre[tuple(slice(n // 2 - width // 2, n // 2 - width // 2 + width) for n in mask.shape)] = True
    rng = np.random.default_rng(seed + 104729)
    held = mask & ~centre & (rng.random(mask.shape) < fraction)
    return mask & ~held, held


def cs_sweep_holdout(
    kspace: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    method: str,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    max_iter: int = 100,
    fraction: float = 0.05,
    seed: int = 0,
) -> SweepResult:
    """Choose lambda without ground truth: reconstruct from most samples, score on held-out ones, then rerun.

    Each lambda reconstructs from the acquired samples minus a random ``fraction`` (outside the calibration
    box); the lambda whose image best predicts the held-out samples is rerun on all samples.
    """
    train, held = holdout_split(mask, fraction, seed)
    if not held.any():
        return cs_sweep(kspace, maps, mask, method, lambdas[len(lambdas) // 2 : len(lambdas) // 2 + 1], max_iter)
    op_held = SenseOp(torch.from_numpy(np.asarray(maps, np.complex64)), torch.from_numpy(held))
    y_held = np.asarray(kspace) * held

    def score(image: np.ndarray) -> float:
        pred = op_held(torch.from_numpy(image.astype(np.complex64))).numpy()
        return float(np.sum(np.abs(pred - y_held) ** 2))

    sweep = cs_sweep(np.asarray(kspace) * train, maps, train, method, lambdas, max_iter, score, "held-out k-space")
    t0 = time.perf_counter()
    scale = normalisation(kspace, maps, mask)
    final = cs_reconstruct(np.asarray(kspace) / scale, maps, mask, method, sweep.lamda, max_iter) * scale
    sweep.images[sweep.chosen] = final
    sweep.seconds[sweep.chosen] += time.perf_counter() - t0
    return sweep
