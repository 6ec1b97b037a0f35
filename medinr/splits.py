"""THE hold-out rule: which units of the data a fit never sees, so that their error can choose for it.

A *unit* is what is held out whole: a voxel of an image (:func:`medinr.voxels.voxel_holdout`), a readout
line or a sample of k-space (:func:`medinr.mri.holdout.readout_holdout`); later a radial spoke. Units in a
*protected* set (k-space's calibration region) are always fitted. Of the other available units a fraction is
drawn, at random from the seed, and held out; the rest are fitted. Different folds of one seed hold out
disjoint blocks of one permutation. Each kind of unit has its own seed offset, so that a split is not the
mask or batch draw of the same seed (and the splits of earlier versions are kept).
"""

from __future__ import annotations

import numpy as np

from medinr.errors import MedinrError


def split_units(
    available: np.ndarray,
    fraction: float,
    seed: int,
    *,
    protected: np.ndarray | None = None,
    seed_offset: int = 0,
    min_units: int = 1,
    fold: int = 0,
) -> np.ndarray:
    """The held-out units: a bool array of ``available``'s shape.

    Parameters
    ----------
    available : bool ndarray
        Units that carry data (acquired readouts, known voxels).
    fraction : float in [0, 1)
        Fraction of the candidates (available, not protected) held out, rounded; when ``fraction > 0`` at
        least ``min_units`` (or a quarter of the candidates when fewer, and at least one).
    seed : int
        The draw (offset by ``seed_offset``); the same seed and fold give the same units.
    protected : bool ndarray, optional
        Units never held out (the calibration region of k-space).
    seed_offset : int
        Added to the seed: each kind of unit draws from its own stream.
    min_units : int
        The fewest units a split with ``fraction > 0`` holds out (see ``fraction``).
    fold : int
        Folds of one seed hold out disjoint blocks of one permutation (wrapping round).

    Raises
    ------
    MedinrError
        For a fraction outside [0, 1), or a split that would leave no unit to fit.
    """
    if not 0.0 <= fraction < 1.0:
        raise MedinrError(f"the held-out fraction must lie in [0, 1), got {fraction}")
    available = np.asarray(available, bool)
    keep = np.zeros_like(available) if protected is None else np.asarray(protected, bool) & available
    candidates = np.flatnonzero(available & ~keep)
    held = np.zeros(available.size, bool)
    count = int(round(fraction * candidates.size))
    if fraction > 0 and candidates.size:
        count = min(max(count, min(int(min_units), max(1, candidates.size // 4))), candidates.size)
        if count >= int(available.sum()):
            raise MedinrError(f"holding out {fraction:g} of {int(available.sum())} units leaves none to fit")
        order = candidates[np.random.default_rng(seed + seed_offset).permutation(candidates.size)]
        start = (fold * count) % candidates.size
        held[np.roll(order, -start)[:count]] = True
    return held.reshape(available.shape)
