"""Baselines for non-Cartesian data: the gridding reconstruction and SigPy CS with ``coord=``, lambda held out.

The non-Cartesian counterparts of :mod:`medinr.mri.baselines`, on the same rules: k-space is normalised so
that the gridding image (density-compensated adjoint, :func:`medinr.mri.gridding.gridding`) has a robust
maximum of 1, lambdas are relative to that, the grid widens until its best lambda is inside
(:func:`medinr.mri.baselines.sweep_lambdas`), and the held-out choice fits the readouts outside the held-out
split and scores the whitened error on the held-out readouts (:class:`NonCartesianHeldOutError`), then reruns
the chosen lambda on every readout.

SigPy's trajectory convention (``coord`` in 1/FOV units spanning ``[-N/2, N/2)``, axis ``a`` of ``coord`` along
image axis ``a``) is medinr's, so the trajectory is passed unchanged (tested with point sources). SigPy's
NUFFT (Kaiser-Bessel, width 4, grid 1.25x, numba on one thread) is its own; ``weights`` is the density
compensation when ``weighted`` (a density-weighted data term, as SigPy's non-Cartesian examples use).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medinr.mri.baselines import (
    DEFAULT_LAMBDAS,
    MAX_WIDENING,
    StepSizes,
    SweepResult,
    sweep_lambdas,
    zero_filled_scale,
)
from medinr.mri.gridding import density_compensation, gridding
from medinr.mri.readout_holdout import NonCartesianHeldOutError


def noncart_normalisation(samples: np.ndarray, traj: np.ndarray, maps: np.ndarray, dcf: np.ndarray) -> float:
    """Robust maximum of the gridding image: the unit the non-Cartesian CS lambdas are quoted in."""
    return zero_filled_scale(gridding(samples, traj, dcf, maps))


def cs_reconstruct_noncart(samples: np.ndarray, traj: np.ndarray, maps: np.ndarray, method: str, lamda: float,
                           dcf: np.ndarray | None = None, max_iter: int = 100, steps: StepSizes | None = None
                           ) -> np.ndarray:
    """One SigPy CS reconstruction of non-Cartesian data (``L1WaveletRecon`` / ``TotalVariationRecon``, ``coord=``).

    Parameters
    ----------
    samples : complex ndarray ``(C, readouts, samples)``, normalised
    traj : ndarray ``(readouts, samples, d)`` in 1/FOV units
    maps : complex ndarray ``(C, *grid)``
    method : {'l1wavelet', 'tv'}
    lamda : float
    dcf : ndarray ``(readouts, samples)``, optional
        Data-consistency weights (density compensation); None: plain least squares.
    max_iter : int
    steps : StepSizes, optional
        The solver's step sizes for these readouts and weights (filled by the first run given it empty).

    Returns
    -------
    complex64 ndarray ``grid``
    """
    from medinr.mri.baselines import _sigpy_app, run_sigpy_app

    kwargs = {"weights": None if dcf is None else np.asarray(dcf, np.float32),
              "coord": np.asarray(traj, np.float32), "max_iter": max_iter, "show_pbar": False}
    y, mps = np.asarray(samples, np.complex64), np.asarray(maps, np.complex64)
    return run_sigpy_app(_sigpy_app(), method, y, mps, lamda, kwargs, steps)


def cs_sweep_noncart(samples: np.ndarray, traj: np.ndarray, maps: np.ndarray, method: str,
                     score: Callable[[np.ndarray], float], dcf: np.ndarray, weighted: bool = True,
                     lambdas: tuple[float, ...] = DEFAULT_LAMBDAS, max_iter: int = 100, criterion: str = "",
                     max_widening: int = MAX_WIDENING) -> SweepResult:
    """A CS method over a widening lambda grid on non-Cartesian data; ``score(image)`` (input units) chooses.

    ``dcf`` (:func:`medinr.mri.gridding.density_compensation` of ``traj``) normalises the data and, when
    ``weighted``, weights the data term.
    """
    scale = noncart_normalisation(samples, traj, maps, dcf)
    weights = dcf if weighted else None

    steps = StepSizes()  # the same readouts and weights for every lambda: one estimate of the step sizes

    def run(lamda: float) -> np.ndarray:
        return cs_reconstruct_noncart(np.asarray(samples) / scale, traj, maps, method, lamda, weights, max_iter,
                                      steps) * scale

    return sweep_lambdas(method, run, score, lambdas, criterion, max_widening)


def cs_sweep_holdout_noncart(samples: np.ndarray, traj: np.ndarray, maps: np.ndarray, method: str,
                             validation: NonCartesianHeldOutError, density: str = "voronoi", weighted: bool = True,
                             lambdas: tuple[float, ...] = DEFAULT_LAMBDAS, max_iter: int = 100) -> SweepResult:
    """Choose lambda without ground truth: reconstruct from the fitting readouts, score on the held-out ones
    (``validation``, THE split the INR uses too), then rerun the chosen lambda on every readout.

    ``density`` is the density compensation method (:func:`medinr.mri.gridding.density_compensation`), computed
    for the fitting readouts and for all of them.
    """
    import time

    grid = tuple(np.asarray(maps).shape[1:])
    fit = ~validation.held
    dcf_fit = density_compensation(np.asarray(traj)[fit], grid, density)
    sweep = cs_sweep_noncart(np.asarray(samples)[:, fit], np.asarray(traj)[fit], maps, method, validation, dcf_fit,
                             weighted, lambdas, max_iter, "whitened error on held-out readouts")
    t0 = time.perf_counter()
    dcf = density_compensation(traj, grid, density)
    scale = noncart_normalisation(samples, traj, maps, dcf)
    final = cs_reconstruct_noncart(np.asarray(samples) / scale, traj, maps, method, sweep.lamda,
                                   dcf if weighted else None, max_iter) * scale
    sweep.images[sweep.chosen] = final
    sweep.seconds[sweep.chosen] += time.perf_counter() - t0
    return sweep
