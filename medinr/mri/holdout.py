"""THE held-out split of acquired k-space: fitting samples and validation samples, shared by the INR and CS.

The split follows the one hold-out rule (:func:`medinr.splits.split_units`) with the calibration region
(:func:`medinr.mri.masks.calibration_region`) protected: the centre calibrates the coil maps and anchors the
image's contrast. Samples are held out in acquisition units: whole readouts when the mask is constant along
the readout (first) axis, as every 1D line mask and every ky-kz Poisson mask of a volume is, single samples
otherwise. Predicting a withheld readout is the task of the reconstruction itself (filling in lines that were
never acquired), so its error is a faithful validation signal. The whitened residual energy per held-out
sample (:func:`medinr.training.validators.held_out_residual`) is the one validation rule: the INR's
self-calibration scores it during its fit, the CS lambda choice through :class:`HeldOutError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medinr.mri.masks import calibration_region
from medinr.mri.operators import SenseOp, coil_mix
from medinr.splits import split_units
from medinr.training.validators import held_out_residual

#: Offset of the split's generator from the seed, so the split is not the mask draw of the same seed.
SPLIT_SEED_OFFSET = 104729
#: The fewest units a split holds out (when a quarter of the candidates allow it): one or two outer lines hold
#: mostly noise and make a poor validation set.
MIN_HELD_UNITS = 3


def _units(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """The sampling units (a readout per position of the other axes, or every sample) and whether they are lines."""
    lines = mask.ndim >= 2 and mask.shape[0] > 1 and bool((mask == mask[:1]).all())
    return (mask[0], True) if lines else (mask, False)


def _calibration_units(mask: np.ndarray, lines: bool) -> np.ndarray:
    """Units that touch the calibration region (a line crossing it calibrates, so it is never held out)."""
    region = calibration_region(mask)
    return region.any(axis=0) if lines else region


def readout_holdout(mask: np.ndarray, fraction: float, seed: int, fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the acquired samples into (fitting mask, held-out mask); the two are disjoint and cover ``mask``.

    Parameters
    ----------
    mask : bool ndarray (grid)
        Acquired samples.
    fraction : float in [0, 1)
        Fraction of the acquired units *outside the calibration region* that are held out (rounded; when
        ``fraction > 0`` at least :data:`MIN_HELD_UNITS`, or a quarter of the candidates if fewer).
    seed : int
        The draw; the same seed (and fold) gives the same split.
    fold : int
        Splits of one seed with different folds hold out disjoint sets, for averaging reconstructions over
        splits.

    Returns
    -------
    (fit, held) : bool ndarrays of the grid's shape
    """
    mask = np.asarray(mask, bool)
    units, lines = _units(mask)
    held = split_units(units, fraction, seed, protected=_calibration_units(mask, lines),
                       seed_offset=SPLIT_SEED_OFFSET, min_units=MIN_HELD_UNITS, fold=fold)
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


@dataclass
class KspaceSplit:
    """THE split of one reconstruction problem, drawn once: every method fits ``fit`` and is chosen on ``held``."""

    fit: np.ndarray
    held: np.ndarray
    fraction: float
    seed: int

    @classmethod
    def draw(cls, mask: np.ndarray, fraction: float, seed: int) -> "KspaceSplit":
        fit, held = readout_holdout(mask, fraction, seed)
        return cls(fit, held, float(fraction), int(seed))

    def describe(self) -> dict[str, Any]:
        return {**describe_split(self.fit | self.held, self.held), "fraction": self.fraction, "seed": self.seed}


class HeldOutError:
    """Whitened prediction error of an image on the held-out samples: the score every method is chosen by.

    Parameters
    ----------
    kspace : complex ndarray ``(C, *grid)``
        Acquired k-space (input units).
    maps : complex ndarray ``(C, *grid)``
    held : bool ndarray ``grid``
        Held-out samples (from :func:`readout_holdout`).
    whitening : complex ndarray ``(C, C)``
        Noise whitening (:meth:`medinr.mri.noise.NoiseEstimate.whitening`).
    """

    def __init__(self, kspace: np.ndarray, maps: np.ndarray, held: np.ndarray, whitening: np.ndarray) -> None:
        w = torch.from_numpy(np.asarray(whitening, np.complex64))
        self.held = np.asarray(held, bool)
        self._held = torch.from_numpy(self.held)
        self._op = SenseOp(coil_mix(w, torch.from_numpy(np.asarray(maps, np.complex64))), self._held)
        self._y = coil_mix(w, torch.from_numpy(np.asarray(kspace, np.complex64)))

    def __call__(self, image: np.ndarray) -> float:
        x = torch.from_numpy(np.asarray(image, np.complex64))
        return float(held_out_residual(self._op.coil_kspace(x) - self._y, self._held))
