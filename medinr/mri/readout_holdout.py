"""THE held-out split of non-Cartesian k-space: whole readouts (spokes, interleaves) held out, and its error.

The non-Cartesian counterpart of :mod:`medinr.mri.holdout`, with the same rule. The sampling units are whole
readouts: predicting a spoke that was never fitted is the reconstruction's own task, and its error is the
validation signal. Readouts that are the only ones to sample the calibration centre are protected (never held
out), as lines through the calibration box are for Cartesian data; on radial and spiral trajectories every
readout crosses k = 0, the centre stays densely sampled whichever are held out, and none is protected (so the
held-out spokes carry their share of the centre too, not the periphery alone). Counts, seeds and folds follow
:func:`medinr.splits.split_units` (the one hold-out rule, with the Cartesian readouts' seed offset);
:class:`NonCartesianHeldOutError` is the same whitened residual energy per held-out sample
(:func:`medinr.training.validators.held_out_residual`) predicted through the non-uniform
SENSE model, so the INR's self-calibration and the CS lambda choice are judged alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.mri.gridding import calibration_width
from medinr.mri.holdout import MIN_HELD_UNITS, SPLIT_SEED_OFFSET
from medinr.mri.nufft import NufftSenseOp
from medinr.mri.operators import coil_mix
from medinr.splits import split_units
from medinr.training.validators import held_out_residual


def protected_readouts(traj: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """Readouts never held out: ``(R,)`` bool.

    A readout reaches the calibration centre when one of its samples lies in the central box that the whole
    trajectory samples densely (:func:`medinr.mri.gridding.calibration_width`, at least 2 x 2 cells). When
    every readout does (radial, spiral) none is protected; otherwise those that do are.
    """
    traj = np.asarray(traj)
    half = max(calibration_width(traj, grid), 2) / 2
    crosses = (np.abs(traj).max(axis=-1) <= half).any(axis=1)
    return np.zeros(traj.shape[0], bool) if crosses.all() else crosses


def holdout_readouts(traj: np.ndarray, grid: Sequence[int], fraction: float, seed: int,
                     fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the readouts into (fitting, held-out) bool masks ``(R,)``: disjoint, covering every readout.

    Parameters
    ----------
    traj : ndarray ``(readouts, samples, d)`` in 1/FOV units
    grid : image matrix
    fraction : float in [0, 1)
        Fraction of the unprotected readouts held out (rounded; when positive at least 3, or a quarter of the
        candidates if fewer).
    seed, fold : int
        As :func:`medinr.mri.holdout.readout_holdout`: the same seed and fold give the same split; folds of one
        seed hold out disjoint sets.
    """
    available = np.ones(np.asarray(traj).shape[0], bool)
    held = split_units(available, fraction, seed, protected=protected_readouts(traj, grid),
                       seed_offset=SPLIT_SEED_OFFSET, min_units=MIN_HELD_UNITS, fold=fold)
    return ~held, held


def describe_readout_split(traj: np.ndarray, grid: Sequence[int], held: np.ndarray) -> dict:
    """What a split holds out, for metrics.json."""
    protected = protected_readouts(traj, grid)
    return {
        "unit": "readout (spoke / interleave)",
        "held_out_units": int(np.sum(held)),
        "acquired_units": int(np.asarray(traj).shape[0]),
        "calibration_units": int(protected.sum()),
    }


@dataclass
class ReadoutSplit:
    """THE split of one non-Cartesian problem, drawn once: every method fits ``fit`` and is chosen on ``held``
    (bool ``(readouts,)``), as :class:`medinr.mri.holdout.KspaceSplit` for Cartesian data."""

    fit: np.ndarray
    held: np.ndarray
    fraction: float
    seed: int
    summary: dict[str, Any]

    @classmethod
    def draw(cls, traj: np.ndarray, grid: Sequence[int], fraction: float, seed: int) -> "ReadoutSplit":
        fit, held = holdout_readouts(traj, grid, fraction, seed)
        return cls(fit, held, float(fraction), int(seed), describe_readout_split(traj, grid, held))

    def samples(self, which: str, samples_per_readout: int) -> np.ndarray:
        """The split as a bool mask over the samples ``(readouts, samples)``: ``which`` 'fit' or 'held'."""
        units = self.fit if which == "fit" else self.held
        return np.repeat(units[:, None], samples_per_readout, axis=1)

    def describe(self) -> dict[str, Any]:
        return {**self.summary, "fraction": self.fraction, "seed": self.seed}


class NonCartesianHeldOutError:
    """Whitened prediction error of an image on the held-out readouts (about 1 at the noise floor).

    Parameters
    ----------
    samples : complex ndarray ``(C, readouts, samples)``
        Acquired k-space (input units).
    traj : ndarray ``(readouts, samples, d)`` in 1/FOV units
    maps : complex ndarray ``(C, *grid)``
    held : bool ndarray ``(readouts,)`` (from :func:`holdout_readouts`)
    whitening : complex ndarray ``(C, C)`` (:meth:`medinr.mri.noise.NoiseEstimate.whitening`)
    """

    def __init__(self, samples: np.ndarray, traj: np.ndarray, maps: np.ndarray, held: np.ndarray,
                 whitening: np.ndarray) -> None:
        self.held = np.asarray(held, bool)
        if not self.held.any():
            raise MedinrError("the held-out split holds no readout")
        w = torch.from_numpy(np.asarray(whitening, np.complex64))

        def mix(a: np.ndarray) -> torch.Tensor:
            return coil_mix(w, torch.from_numpy(np.asarray(a, np.complex64)))

        self._op = NufftSenseOp(mix(maps), np.asarray(traj)[self.held])
        self._y = mix(np.asarray(samples)[:, self.held])
        self._weights = torch.ones(self._y.shape[1:])

    def __call__(self, image: np.ndarray) -> float:
        x = torch.from_numpy(np.asarray(image, np.complex64))
        return float(held_out_residual(self._op(x) - self._y, self._weights))
