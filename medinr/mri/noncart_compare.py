"""Run every reconstruction method on one non-Cartesian problem and score them: the non-Cartesian
:func:`medinr.mri.compare.run_methods`.

Gridding (density-compensated adjoint: the non-Cartesian zero-filled), SigPy CS with ``coord=`` (lambda chosen
on THE held-out readouts by the whitened error, or on the ground truth: the benchmark's hard target) and the
self-calibrated INR (:func:`medinr.mri.noncart_inr.noncart_inr_reconstruct`) all see the same samples,
trajectory, density compensation, maps, noise estimate and split of whole readouts, computed once
(:meth:`NonCartesianProblem.prepared`). Scores and times are those of :class:`medinr.mri.compare.Comparison`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.metrics import psnr, tissue_mask
from medinr.mri.compare import Comparison, MethodResult, _timed, check_methods, run_beside_inr
from medinr.mri.config import CS_METHODS, InrReconConfig
from medinr.mri.gridding import calibration_width
from medinr.mri.noncart_baselines import cs_sweep_holdout_noncart, cs_sweep_noncart
from medinr.mri.noncart_inr import noncart_image, noncart_inr_reconstruct
from medinr.mri.noncart_kspace import UNITS_FOV
from medinr.mri.noncart_problem import NonCartesianProblem
from medinr.mri.readout_holdout import NonCartesianHeldOutError

#: Methods :func:`run_noncart_methods` knows; CS methods may also be chosen on the ground truth ('<cs>_oracle').
NONCART_METHODS = ("gridding", *CS_METHODS, "inr")


def noncart_relative_error(problem: NonCartesianProblem, image: np.ndarray) -> float:
    """``||A x - y|| / ||y||`` over every readout: the data consistency of a complex image ``x``."""
    pred = problem.operator(whitened=False)(torch.from_numpy(np.asarray(image, np.complex64)))
    measured = torch.from_numpy(np.asarray(problem.samples, np.complex64))
    return float(torch.linalg.vector_norm(pred - measured) / torch.linalg.vector_norm(measured))


def describe_sampling(problem: NonCartesianProblem) -> dict[str, Any]:
    """The trajectory as metrics.json states it: readouts, samples, units, density compensation, centre."""
    readouts, per_readout = problem.traj.shape[:2]
    return {
        "readouts": int(readouts),
        "samples_per_readout": int(per_readout),
        "samples_per_voxel": float(readouts * per_readout / np.prod(problem.grid)),
        "units": problem.settings.get("trajectory_units", f"{UNITS_FOV}, simulated"),
        "density_compensation": problem.settings.get("density_compensation"),
        "calibration_width": calibration_width(problem.traj, problem.grid),
    }


class NonCartesianComparison(Comparison):
    """:class:`~medinr.mri.compare.Comparison` of a non-Cartesian problem (trajectory in place of a mask)."""

    problem: NonCartesianProblem

    def metrics(self) -> dict[str, Any]:
        problem = self.problem
        out: dict[str, Any] = {
            "reference": problem.reference_kind,
            "problem": problem.settings,
            "sampling": describe_sampling(problem),
            "noise": problem.noise.to_dict(),
            "holdout_split": problem.split.describe() if problem.split is not None else None,
            "method_details": {n: r.details for n, r in self.results.items()},
            "kspace_relative_error": {n: noncart_relative_error(problem, r.image) for n, r in self.results.items()},
        }
        scores = self.scores()
        if scores:
            out["methods"] = scores
        return out


def run_cs_noncart(problem: NonCartesianProblem, method: str, validation: NonCartesianHeldOutError, oracle: bool,
                   max_iter: int = 100) -> MethodResult:
    """SigPy CS with ``coord=`` and density-compensation weights; lambda on the held-out readouts, or (``oracle``)
    on the ground truth."""
    density = problem.settings.get("density_compensation", "voronoi")
    if oracle:
        if problem.reference is None:
            raise MedinrError("an oracle lambda needs a reference image")
        ref, tissue = problem.reference, tissue_mask(problem.reference)
        sweep, wall, cpu = _timed(lambda: cs_sweep_noncart(
            problem.samples, problem.traj, problem.maps, method, lambda x: -psnr(ref, np.abs(x), tissue), problem.dcf,
            max_iter=max_iter, criterion="ground truth (tissue PSNR)"))
    else:
        sweep, wall, cpu = _timed(lambda: cs_sweep_holdout_noncart(
            problem.samples, problem.traj, problem.maps, method, validation, density, max_iter=max_iter))
    return MethodResult(sweep.image, wall, cpu, sweep.to_dict())


def run_inr_noncart(problem: NonCartesianProblem, config: InrReconConfig, seed: int, device: torch.device,
                    prior: np.ndarray | None = None, progress: bool = False) -> tuple[MethodResult, Any]:
    """The self-calibrated INR on the trajectory, as a complex image on the grid and as a continuous image."""

    def run() -> tuple[Any, np.ndarray]:
        recon = noncart_inr_reconstruct(problem, config, prior, seed, progress, device)
        return recon, noncart_image(recon, problem.maps)

    (recon, image), wall, cpu = _timed(run)
    shared = ("pipeline", "inr", "noise", "split")  # recorded once, at the top of metrics.json
    details = {k: v for k, v in recon.extra.items() if k not in shared}
    details["final_loss"] = recon.history.losses[-1] if recon.history.losses else None
    return MethodResult(image, wall, cpu, details), recon


def run_noncart_methods(
    problem: NonCartesianProblem,
    config: InrReconConfig,
    methods: tuple[str, ...] = NONCART_METHODS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    prior: np.ndarray | None = None,
    progress: bool = False,
    cs_iterations: int = 100,
    overlap: bool = False,
) -> NonCartesianComparison:
    """Run ``methods`` (:data:`NONCART_METHODS`, '<cs>_oracle' for a ground-truth lambda; 'zero_filled' is
    taken as 'gridding') on ``problem``, with one split of whole readouts (``config.holdout_fraction``, 10 %
    for the CS lambdas when self-calibration is off). ``overlap``: the other methods beside the INR, as
    :func:`medinr.mri.compare.run_methods`."""
    device = torch.device(device)
    methods = tuple("gridding" if name == "zero_filled" else name for name in methods)
    check_methods(methods, "gridding", NONCART_METHODS)
    problem = problem.prepared(config.holdout_fraction if config.holdout_fraction > 0 else 0.1, seed)
    validation = problem.validation()

    def baseline(name: str) -> MethodResult:
        if name == "gridding":
            image, wall, cpu = _timed(problem.gridding)
            return MethodResult(image, wall, cpu, {})
        return run_cs_noncart(problem, name.removesuffix("_oracle"), validation, name.endswith("_oracle"),
                              cs_iterations)

    results, inr = run_beside_inr(methods, baseline,
                                  lambda: run_inr_noncart(problem, config, seed, device, prior, progress), overlap)
    return NonCartesianComparison(problem, results, inr)
