"""Baselines on the same data and mask: zero-filled SENSE adjoint and compressed sensing (SigPy L1-wavelet, TV).

SigPy is a core dependency, imported only when a CS baseline runs (numba compiles on first use). Lambda is swept over
a relative grid that widens until its best value is inside it; which lambda is best is the caller's score
(the ground truth in the benchmark's hard target, held-out k-space samples, as for the INR, otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.intensity import IntensityScale
from medinr.mri.config import CS_METHODS
from medinr.mri.holdout import HeldOutError
from medinr.mri.operators import SenseOp

#: The starting lambda grid, for k-space normalised so that the zero-filled image has a robust maximum of 1
#: (see :func:`normalisation`): a relative scale. A sweep widens it by factors of sqrt(10) while the best
#: lambda sits at one of its ends (:func:`cs_sweep`).
DEFAULT_LAMBDAS = (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2)
#: Factor between neighbouring lambdas, and how many extra lambdas a sweep may add at its ends.
LAMBDA_STEP = 10**0.5
MAX_WIDENING = 6
#: Iterations per lambda of a held-out sweep (warm-started along lambda); the chosen lambda then runs the full
#: count on every sample. Measured on seven 8x cases of bench/recon.py against 100 iterations per lambda: half
#: the sweep's CPU time; the same lambda on five, a neighbouring one on two; held-out CS PSNR change median
#: +0.01 dB, worst -0.37, best +0.43 (the final run starts from the sweep's solution).
SWEEP_ITERATIONS = 30
#: The solver attributes of a SigPy CS app that depend on the operator, not on lambda: the gradient step of
#: L1-wavelet's gradient method, the primal and dual steps of TV's primal-dual method. SigPy estimates them in every
#: app it builds, by 30 power iterations of ``A^H A`` (0.5 s of a 1.35 s 30-iteration L1-wavelet run, 256 x 256, 8
#: coils); a sweep keeps the first app's (:class:`StepSizes`).
STEP_SIZES = {"l1wavelet": ("alpha",), "tv": ("tau", "sigma")}


def zero_filled(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero-filled reconstruction: the adjoint of the SENSE operator (coil-combined with the maps)."""
    op = SenseOp(torch.from_numpy(np.asarray(maps, np.complex64)), torch.from_numpy(np.asarray(mask)))
    return op.H(torch.from_numpy(np.asarray(kspace, np.complex64))).numpy()


def _sigpy_app():
    try:
        import sigpy.mri.app as app
    except ImportError:
        raise MedinrError("the CS baselines need SigPy, a dependency of medinr that is missing here: pip install sigpy"
                          ) from None
    return app


@dataclass
class StepSizes:
    """The step sizes of SigPy's solver for one operator (maps, samples, weights), shared by the apps of a sweep.

    Empty until the first app has estimated them; every later app of the same operator is given them and skips
    its power iteration. Lambda does not enter them (the data term alone, and TV's finite differences, set them).
    """

    values: dict[str, float] = field(default_factory=dict)


def cs_reconstruct(
    kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, method: str, lamda: float, max_iter: int = 100,
    start: np.ndarray | None = None, steps: StepSizes | None = None,
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
    start : complex ndarray ``grid``, optional
        The first iterate (a warm start, in the same normalised units), e.g. the solution at a neighbouring
        lambda; SigPy's zero image otherwise.
    steps : StepSizes, optional
        The solver's step sizes for this ``maps`` and ``mask`` (filled by the first run that is given it empty).

    Returns
    -------
    complex ndarray ``grid``
    """
    app = _sigpy_app()
    weights = np.asarray(mask, np.float32)
    ksp = np.asarray(kspace, np.complex64) * weights
    mps = np.asarray(maps, np.complex64)
    options = {"weights": weights, "max_iter": max_iter, "show_pbar": False}
    if start is not None:
        options["x"] = np.array(start, dtype=np.complex64)  # a copy: SigPy updates its iterate in place
    return run_sigpy_app(app, method, ksp, mps, lamda, options, steps)


def soft_threshold(lamda: Any, values: np.ndarray) -> np.ndarray:
    """SigPy's soft threshold ``(|x| - lamda)_+ sgn(x)`` on the CPU, element-wise with broadcasting, in NumPy: the
    result type of its Numba ufunc (``sigpy.thresh._soft_thresh``: a complex64 image and a float lambda give
    complex128; 0 where ``x`` is 0), without compiling that ufunc in every process (0.85 s at its first call, in
    each run of a command). ``x`` is scaled by ``(|x| - lamda)_+ / |x|`` (at most 1) rather than divided by
    ``|x|``: a subnormal float32 ``|x|`` overflows its reciprocal."""
    values = np.asarray(values)
    size = np.abs(values)
    mag = size - np.asarray(lamda, dtype=np.float64)  # as Numba types a Python float: float64
    mag = (np.abs(mag) + mag) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(size == 0, 0.0, mag / np.where(size == 0, 1, size))
    return values * factor


@contextmanager
def _numpy_soft_threshold() -> Iterator[None]:
    """Within the block SigPy's CPU soft threshold is :func:`soft_threshold` (restored after)."""
    from sigpy import thresh

    original = getattr(thresh, "_soft_thresh", None)
    if original is None:  # another SigPy: its own
        yield
        return
    thresh._soft_thresh = soft_threshold
    try:
        yield
    finally:
        thresh._soft_thresh = original


def run_sigpy_app(app: Any, method: str, kspace: np.ndarray, maps: np.ndarray, lamda: float,
                  options: dict[str, Any], steps: StepSizes | None = None) -> np.ndarray:
    """Run SigPy's L1-wavelet or TV app (``app``: ``sigpy.mri.app``) with ``options`` (weights, coord, x, ...);
    with ``steps``, the solver takes its step sizes from there, or puts its own estimate there."""
    if method not in STEP_SIZES:
        raise MedinrError(f"unknown CS method '{method}' ({', '.join(CS_METHODS)})")
    build = app.L1WaveletRecon if method == "l1wavelet" else app.TotalVariationRecon
    solver = build(kspace, maps, lamda, **options, **(steps.values if steps is not None else {}))
    if steps is not None and not steps.values:
        steps.values = {name: float(getattr(solver, name)) for name in STEP_SIZES[method]}
    with _numpy_soft_threshold():
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
    """Every lambda of a sweep (ascending) with its image (input units), wall time and selection score."""

    method: str
    lambdas: list[float] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    chosen: int = 0
    criterion: str = ""
    widened: int = 0
    iterations: dict[str, int] = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        return self.images[self.chosen]

    @property
    def lamda(self) -> float:
        return self.lambdas[self.chosen]

    @property
    def at_boundary(self) -> bool:
        """True if the chosen lambda is the smallest or the largest tried."""
        return self.chosen in (0, len(self.lambdas) - 1)

    def add(self, lamda: float, image: np.ndarray, seconds: float, score: float) -> None:
        """Insert one result in lambda order."""
        i = int(np.searchsorted(self.lambdas, lamda))
        for values, v in ((self.lambdas, lamda), (self.images, image), (self.seconds, seconds), (self.scores, score)):
            values.insert(i, v)
        self.chosen = int(np.argmin(self.scores))

    def to_dict(self) -> dict[str, Any]:
        return {
            "lambda": self.lamda,
            "lambdas": self.lambdas,
            "scores": self.scores,
            "criterion": self.criterion,
            "widened": self.widened,
            "at_boundary": self.at_boundary,
            **({"iterations": self.iterations} if self.iterations else {}),
        }


def cs_sweep(
    kspace: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    method: str,
    score: Callable[[np.ndarray], float],
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    max_iter: int = 100,
    criterion: str = "",
    max_widening: int = MAX_WIDENING,
) -> SweepResult:
    """Run a CS method over a lambda grid, widened until the lowest ``score(image)`` is not at an end.

    ``score`` receives the image in the input's units (e.g. minus PSNR against a ground truth, or the
    error on held-out k-space samples). Lambdas are relative to the normalised data (see
    :func:`normalisation`); while the best one is the smallest or the largest tried, the grid grows by
    :data:`LAMBDA_STEP` on that side, at most ``max_widening`` times. The grid is walked from the strongest
    lambda down and every run starts from the solution at the nearest lambda already done (a continuation):
    ``max_iter`` iterations then reach a solution at least as converged as a cold start's. The solver's step
    sizes are estimated once (:class:`StepSizes`).
    """
    scale = normalisation(kspace, maps, mask)
    y = np.asarray(kspace) / scale
    done: dict[float, np.ndarray] = {}
    steps = StepSizes()

    def run(lamda: float) -> np.ndarray:
        near = min(done, key=lambda other: abs(np.log(other / lamda)), default=None)
        image = cs_reconstruct(y, maps, mask, method, lamda, max_iter, done[near] if near is not None else None,
                               steps)
        done[lamda] = image
        return image * scale

    return sweep_lambdas(method, run, score, lambdas, criterion, max_widening)


def cs_sweep_holdout(
    kspace: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    method: str,
    validation: HeldOutError,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    max_iter: int = 100,
    sweep_iter: int | None = None,
) -> SweepResult:
    """Choose lambda without ground truth: reconstruct from the fitting samples, score on the held-out ones,
    then rerun the chosen lambda on every acquired sample.

    ``validation`` holds THE split (:func:`medinr.mri.holdout.readout_holdout`) and the whitened error the
    INR's self-calibration uses too, so both methods choose on the same samples by the same rule. The sweep runs
    ``sweep_iter`` iterations per lambda (default :data:`SWEEP_ITERATIONS`, at most ``max_iter``; warm-started
    along lambda, see :func:`cs_sweep`); the final run on every sample runs ``max_iter`` from the chosen
    lambda's sweep solution.
    """
    train = np.asarray(mask, bool) & ~validation.held
    iters = min(max_iter, SWEEP_ITERATIONS if sweep_iter is None else sweep_iter)
    sweep = cs_sweep(np.asarray(kspace) * train, maps, train, method, validation, lambdas, iters,
                     "whitened error on held-out acquired k-space")
    t0 = time.perf_counter()
    scale = normalisation(kspace, maps, mask)
    final = cs_reconstruct(np.asarray(kspace) / scale, maps, mask, method, sweep.lamda, max_iter,
                           sweep.image / scale) * scale
    sweep.images[sweep.chosen] = final
    sweep.seconds[sweep.chosen] += time.perf_counter() - t0
    sweep.iterations = {"sweep": iters, "final": max_iter}
    return sweep


def sweep_lambdas(
    method: str,
    run: Callable[[float], np.ndarray],
    score: Callable[[np.ndarray], float],
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    criterion: str = "",
    max_widening: int = MAX_WIDENING,
) -> SweepResult:
    """THE widening lambda sweep, for any reconstruction ``run(lamda) -> image`` (input units, timed here).

    The lambdas are run in descending order (strong to weak: the order a warm-started continuation takes);
    while the best ``score`` is at an end of the grid, the grid grows by :data:`LAMBDA_STEP` on that side, at
    most ``max_widening`` times. :func:`cs_sweep` (Cartesian, warm-started along lambda) and
    :func:`medinr.mri.noncart_baselines.cs_sweep_noncart` both run it.
    """
    result = SweepResult(method, criterion=criterion)

    def one(lamda: float) -> None:
        t0 = time.perf_counter()
        image = run(lamda)
        result.add(lamda, image, time.perf_counter() - t0, float(score(image)))

    for lamda in sorted(lambdas, reverse=True):  # strong to weak: the order a warm-started continuation takes
        one(float(lamda))
    while len(result.lambdas) > 1 and result.at_boundary and result.widened < max_widening:
        low = result.chosen == 0
        one(result.lambdas[0] / LAMBDA_STEP if low else result.lambdas[-1] * LAMBDA_STEP)
        result.widened += 1
    return result
