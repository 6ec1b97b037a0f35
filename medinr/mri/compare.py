"""Run every reconstruction method on one problem and score them: what ``medinr reconstruct`` and the benchmark share.

Zero-filled, SigPy CS (lambda chosen on THE held-out split by the whitened validation error, and optionally
on the ground truth: the benchmark's hard target) and the self-calibrated INR all see the same k-space,
mask and maps, and the same noise estimate and split, computed once (:meth:`ReconProblem.prepared`). Scores:
PSNR/SSIM/NMSE against the reference (over the image and a tissue mask) when there is one, and the k-space
relative error (data consistency) always. Times are kept apart from the scores (:meth:`Comparison.timing`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.metrics import image_metrics, psnr, tissue_mask
from medinr.mri.baselines import cs_sweep, cs_sweep_holdout, zero_filled
from medinr.mri.config import CS_METHODS, InrReconConfig
from medinr.mri.holdout import HeldOutError
from medinr.mri.inr_recon import inr_reconstruct, reconstructed_image
from medinr.mri.problem import ReconProblem, kspace_relative_error

#: Methods :func:`run_methods` knows; CS methods may also be chosen on the ground truth ('<method>_oracle').
METHODS = ("zero_filled", *CS_METHODS, "inr")


@dataclass
class MethodResult:
    """One method's complex image (input units), wall time (s), CPU time (s) and what it chose."""

    image: np.ndarray
    seconds: float
    cpu_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def magnitude(self) -> np.ndarray:
        return np.abs(self.image)


@dataclass
class Comparison:
    """Every method's result on one (prepared) problem, and the INR as a continuous image."""

    problem: ReconProblem
    results: dict[str, MethodResult]
    inr: ContinuousImage | None = None

    def magnitudes(self) -> dict[str, np.ndarray]:
        return {name: r.magnitude for name, r in self.results.items()}

    def scores(self) -> dict[str, dict[str, float]]:
        """Image metrics against the reference (empty without one)."""
        ref = self.problem.reference
        if ref is None:
            return {}
        tissue = tissue_mask(ref)
        return {name: image_metrics(ref, r.magnitude, tissue) for name, r in self.results.items()}

    def metrics(self) -> dict[str, Any]:
        """Everything for metrics.json but the times: scores, consistency, the problem, its noise estimate and
        split (once), and each method's choices."""
        problem = self.problem
        out: dict[str, Any] = {
            "reference": problem.reference_kind,
            "problem": problem.settings,
            "acceleration_achieved": problem.mask.achieved_acceleration,
            "noise": problem.noise.to_dict() if problem.noise is not None else None,
            "holdout_split": problem.split.describe() if problem.split is not None else None,
            "method_details": {n: r.details for n, r in self.results.items()},
            "kspace_relative_error": {n: kspace_relative_error(problem, r.image) for n, r in self.results.items()},
        }
        scores = self.scores()
        if scores:
            out["methods"] = scores
        return out

    def timing(self) -> dict[str, Any]:
        """Wall and CPU seconds of each method (the INR's per stage too)."""
        out: dict[str, Any] = {n: {"seconds": r.seconds, "cpu_seconds": r.cpu_seconds} for n, r in self.results.items()}
        if self.inr is not None and "inr" in out:
            out["inr"]["stages"] = dict(self.inr.history.stages)
        return out


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def run_cs(problem: ReconProblem, method: str, validation: HeldOutError, oracle: bool, max_iter: int = 100
           ) -> MethodResult:
    """A CS baseline with lambda chosen on the held-out split, or (``oracle``) on the ground truth."""
    k, maps, mask = problem.kspace, problem.maps, problem.mask.mask
    if oracle:
        if problem.reference is None:
            raise MedinrError("an oracle lambda needs a reference image")
        ref, tissue = problem.reference, tissue_mask(problem.reference)
        sweep, wall, cpu = _timed(lambda: cs_sweep(k, maps, mask, method, lambda x: -psnr(ref, np.abs(x), tissue),
                                                   max_iter=max_iter, criterion="ground truth (tissue PSNR)"))
    else:
        sweep, wall, cpu = _timed(lambda: cs_sweep_holdout(k, maps, mask, method, validation, max_iter=max_iter))
    return MethodResult(sweep.image, wall, cpu, sweep.to_dict())


def run_inr(problem: ReconProblem, config: InrReconConfig, seed: int, device: torch.device,
            prior: np.ndarray | None = None, progress: bool = False) -> tuple[MethodResult, ContinuousImage]:
    """The self-calibrated INR, as a complex image on the grid and as a continuous image."""

    def run() -> tuple[ContinuousImage, np.ndarray]:
        recon = inr_reconstruct(problem, config, prior, seed, progress, device)
        kspace, maps, mask = problem.tensors(device)
        return recon, reconstructed_image(recon, kspace, maps, mask, config.data_consistency)

    (recon, image), wall, cpu = _timed(run)
    shared = ("pipeline", "inr", "noise", "split")  # recorded once, at the top of metrics.json
    details = {k: v for k, v in recon.extra.items() if k not in shared}
    details["final_loss"] = recon.history.losses[-1] if recon.history.losses else None
    return MethodResult(image, wall, cpu, details), recon


def run_methods(
    problem: ReconProblem,
    config: InrReconConfig,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    prior: np.ndarray | None = None,
    progress: bool = False,
    cs_iterations: int = 100,
) -> Comparison:
    """Run ``methods`` (see :data:`METHODS`; add '<cs>_oracle' for a ground-truth lambda) on ``problem``.

    The noise estimate and the held-out split are computed once (``config.holdout_fraction`` of the readouts,
    from ``seed``) and travel in the problem, so the CS lambdas and the INR's settings are chosen on the same
    samples. With self-calibration off (fraction 0) the CS lambdas are still chosen on a 10 % split.
    """
    device = torch.device(device)
    problem = problem.prepared(config.holdout_fraction if config.holdout_fraction > 0 else 0.1, seed)
    validation = HeldOutError(problem.kspace, problem.maps, problem.split.held, problem.noise.whitening())
    comparison = Comparison(problem, {})
    for name in methods:
        if name == "zero_filled":
            image, wall, cpu = _timed(lambda: zero_filled(problem.kspace, problem.maps, problem.mask.mask))
            comparison.results[name] = MethodResult(image, wall, cpu, {})
        elif name.removesuffix("_oracle") in CS_METHODS:
            oracle = name.endswith("_oracle")
            comparison.results[name] = run_cs(problem, name.removesuffix("_oracle"), validation, oracle, cs_iterations)
        elif name == "inr":
            comparison.results[name], comparison.inr = run_inr(problem, config, seed, device, prior, progress)
        else:
            raise MedinrError(f"unknown method '{name}' ({', '.join(METHODS)}, or <cs method>_oracle)")
    return comparison
