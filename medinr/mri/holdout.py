"""THE held-out split of acquired k-space: fitting samples and validation samples, shared by the INR and CS.

Only samples outside the calibration region (:func:`medinr.mri.masks.calibration_region`) are ever held out:
the centre calibrates the coil maps and anchors the image's contrast. Samples are held out in acquisition
units: whole readouts when the mask is constant along the readout (first) axis, as every 1D line mask and
every ky-kz Poisson mask of a volume is, single samples otherwise. Predicting a withheld readout is the task
of the reconstruction itself (filling in lines that were never acquired), so its error is a faithful
validation signal. :class:`HeldOutError` is the one validation rule (whitened residual energy per held-out
sample) the INR's self-calibration and the CS lambda choice both use.
"""

from __future__ import annotations

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.mri.masks import calibration_region
from medinr.mri.operators import SenseOp

#: Offset of the split's generator from the seed, so the split is not the mask draw of the same seed.
SPLIT_SEED_OFFSET = 104729
#: The fewest units a split holds out (when a quarter of the candidates allow it).
MIN_HELD_UNITS = 3


def _units(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """The sampling units (a readout per position of the other axes, or every sample) and whether they are lines."""
    lines = mask.ndim >= 2 and mask.shape[0] > 1 and bool((mask == mask[:1]).all())
    return (mask[0], True) if lines else (mask, False)


def _calibration_units(mask: np.ndarray, lines: bool) -> np.ndarray:
    """Units that touch the calibration region (a line crossing it calibrates, so it is never held out)."""
    region = calibration_region(mask)
    return region.any(axis=0) if lines else region


def holdout_split(
    mask: np.ndarray, fraction: float, seed: int, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split the acquired samples into (fitting mask, held-out mask); the two are disjoint and cover ``mask``.

    Parameters
    ----------
    mask : bool ndarray (grid)
        Acquired samples.
    fraction : float in [0, 1)
        Fraction of the acquired units *outside the calibration region* that are held out (rounded; when
        ``fraction > 0`` at least 3 units, or a quarter of the candidates if fewer: one or two outer lines
        hold mostly noise and make a poor validation set).
    seed : int
        The draw; the same seed (and fold) gives the same split.
    fold : int
        Splits of one seed with different folds hold out disjoint sets (consecutive blocks of one permutation,
        wrapping round), for averaging reconstructions over splits.

    Returns
    -------
    (fit, held) : bool ndarrays of the grid's shape
    """
    if not 0.0 <= fraction < 1.0:
        raise MedinrError(f"the held-out fraction must lie in [0, 1), got {fraction}")
    mask = np.asarray(mask, bool)
    units, lines = _units(mask)
    candidates = np.flatnonzero(units & ~_calibration_units(mask, lines))
    held_units = np.zeros(units.size, bool)
    count = int(round(fraction * candidates.size))
    if fraction > 0 and candidates.size:
        count = min(max(count, min(MIN_HELD_UNITS, max(1, candidates.size // 4))), candidates.size)
        order = np.random.default_rng(seed + SPLIT_SEED_OFFSET).permutation(candidates)
        start = (fold * count) % candidates.size
        held_units[np.roll(order, -start)[:count]] = True
    held = held_units.reshape(units.shape)
    if lines:
        held = np.broadcast_to(held, mask.shape).copy()
    return mask & ~held, held & mask


def describe_split(mask: np.ndarray, held: np.ndarray) -> dict:
    """What a split holds out, for metrics.json."""
    mask = np.asarray(mask, bool)
    units, lines = _units(mask)
    held_units = _units(held)[0] if lines else held
    return {
        "unit": "readout line" if lines else "sample",
        "held_out_units": int(held_units.sum()),
        "acquired_units": int(units.sum()),
        "calibration_units": int(_calibration_units(mask, lines).sum()),
    }


def validation_error(residual: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """Mean ``|r|^2`` over the held-out samples of every coil; ``residual`` is whitened (about 1 at the noise floor)."""
    weights = held.to(residual.real.dtype)
    return torch.sum((residual.real**2 + residual.imag**2) * weights) / (weights.sum() * residual.shape[0])


class HeldOutError:
    """Whitened prediction error of an image on the held-out samples: the score every method is chosen by.

    Parameters
    ----------
    kspace : complex ndarray ``(C, *grid)``
        Acquired k-space (input units).
    maps : complex ndarray ``(C, *grid)``
    held : bool ndarray ``grid``
        Held-out samples (from :func:`holdout_split`).
    whitening : complex ndarray ``(C, C)``
        Noise whitening (:meth:`medinr.mri.noise.NoiseEstimate.whitening`).
    """

    def __init__(self, kspace: np.ndarray, maps: np.ndarray, held: np.ndarray, whitening: np.ndarray) -> None:
        w = torch.from_numpy(np.asarray(whitening, np.complex64))
        self.held = np.asarray(held, bool)
        c = w.shape[0]
        mix = lambda a: (w @ torch.from_numpy(np.asarray(a, np.complex64)).reshape(c, -1)).reshape(a.shape)  # noqa: E731
        self._op = SenseOp(mix(maps), torch.from_numpy(self.held))
        self._y = mix(kspace)
        self._held = torch.from_numpy(self.held)

    def __call__(self, image: np.ndarray) -> float:
        x = torch.from_numpy(np.asarray(image, np.complex64))
        return float(validation_error(self._op.coil_kspace(x) - self._y, self._held))
