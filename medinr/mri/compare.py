"""Run every reconstruction method on one problem and score them: what ``medinr reconstruct`` and the benchmark share.

Zero-filled, SigPy CS (lambda chosen on THE held-out split by the whitened validation error, and optionally
on the ground truth: the benchmark's hard target) and the self-calibrated INR all see the same k-space,
mask and maps, and the same noise estimate and split, computed once (:meth:`ReconProblem.prepared`). Scores:
PSNR/SSIM/NMSE against the reference (over the image and a tissue mask) when there is one, and the k-space
relative error (data consistency) always. Times are kept apart from the scores (:meth:`Comparison.timing`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
    """One method's complex image (input units), wall time (s), CPU time (s) and what it chose; ``beside``: the
    baselines ran beside it (:func:`run_beside_inr`), so its wall time is not its time alone."""

    image: np.ndarray
    seconds: float
    cpu_seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    beside: bool = False

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
        for name, r in self.results.items():
            if r.beside:
                out[name]["baselines_beside"] = True
        if self.inr is not None and "inr" in out:
            out["inr"]["stages"] = dict(self.inr.history.stages)
        return out


def overlap_baselines(device: torch.device) -> bool:
    """Whether the baselines may run beside the INR (:func:`run_beside_inr`): the INR on a GPU, or at least two
    torch threads (not a batch worker's one thread, nor one thread left by other processes' load)."""
    return device.type != "cpu" or torch.get_num_threads() >= 2


def _thread_cpu(ident: int | None) -> float | None:
    """CPU seconds of the thread ``ident`` so far (None where the platform cannot tell or it has ended)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))  # type: ignore[arg-type]
    except (AttributeError, OSError, TypeError, ValueError):
        return None


def check_methods(methods: tuple[str, ...], plain: str, known: tuple[str, ...]) -> None:
    """One clear error for a method that is neither ``plain`` (zero-filled or gridding), 'inr', nor a CS method
    (or its '_oracle'), before any method runs; ``known`` is the list the error offers."""
    unknown = [n for n in methods if n not in (plain, "inr") and n.removesuffix("_oracle") not in CS_METHODS]
    if unknown:
        raise MedinrError(f"unknown method '{unknown[0]}' ({', '.join(known)}, or <cs method>_oracle)")


def run_beside_inr(methods: tuple[str, ...], baseline: Callable[[str], MethodResult],
                   inr: Callable[[], tuple[MethodResult, Any]], overlap: bool
                   ) -> tuple[dict[str, MethodResult], Any]:
    """Every method of ``methods``: each name but 'inr' by ``baseline(name)``, in order, and 'inr' (if named) by
    ``inr()``; returns the results in the order of ``methods`` and what ``inr`` returned beside its result (None
    without it). With ``overlap`` the baselines run one after another in a second thread while the INR trains in
    this one.

    Why: SigPy's CS runs on one core. On bench/recon.py's MNI axial slice at 4x (256 x 256, 8 coils) its
    lambda sweep took 13.5 s and the INR 14 s on two threads; side by side on the two cores both were done in
    22 s instead of 27.5 s (the INR took 22 s: it shares a core while CS runs), with the same images. The INR
    on one thread beside CS took 27.5 s, so torch keeps its threads. Each baseline's CPU seconds are its
    thread's (SigPy runs on that one thread); the INR's are the process's over its run less what the baselines'
    thread used meanwhile. A baseline's error is raised after the INR ends (the thread does not stop the INR); the
    thread is a daemon, so an interrupted command does not wait for it (an INR that fails leaves it to finish its
    sweep unobserved).
    """
    names = [n for n in methods if n != "inr"]
    results: dict[str, MethodResult] = {}
    if "inr" not in methods:
        return {name: baseline(name) for name in methods}, None
    if not overlap or not names:
        for name in names:
            results[name] = baseline(name)
        results["inr"], extra = inr()
        return {name: results[name] for name in methods}, extra
    failure: list[BaseException] = []
    worker_cpu = [0.0]

    def work() -> None:
        start = time.thread_time()
        try:
            for name in names:
                t0 = time.thread_time()
                result = baseline(name)
                result.cpu_seconds = time.thread_time() - t0
                results[name] = result
        except BaseException as error:  # raised in the caller's thread once the INR has ended
            failure.append(error)
        finally:
            worker_cpu[0] = time.thread_time() - start

    worker = threading.Thread(target=work, name="medinr-baselines", daemon=True)
    worker.start()
    before = _thread_cpu(worker.ident)
    result, extra = inr()
    after = _thread_cpu(worker.ident) if worker.is_alive() else None
    worker.join()
    if failure:
        raise failure[0]
    beside = after - before if before is not None and after is not None else worker_cpu[0]
    result.cpu_seconds = max(0.0, result.cpu_seconds - beside)
    result.beside = True
    results["inr"] = result
    return {name: results[name] for name in methods}, extra


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
    overlap: bool = False,
) -> Comparison:
    """Run ``methods`` (see :data:`METHODS`; add '<cs>_oracle' for a ground-truth lambda) on ``problem``.

    The noise estimate and the held-out split are computed once (``config.holdout_fraction`` of the readouts,
    from ``seed``) and travel in the problem, so the CS lambdas and the INR's settings are chosen on the same
    samples. With self-calibration off (fraction 0) the CS lambdas are still chosen on a 10 % split. With
    ``overlap`` the other methods run beside the INR, in a second thread (:func:`run_beside_inr`; what
    ``medinr reconstruct`` does on two cores or a GPU); the benchmarks run them one after another, each timed alone.
    """
    device = torch.device(device)
    check_methods(methods, "zero_filled", METHODS)
    problem = problem.prepared(config.holdout_fraction if config.holdout_fraction > 0 else 0.1, seed)
    validation = HeldOutError(problem.kspace, problem.maps, problem.split.held, problem.noise.whitening())

    def baseline(name: str) -> MethodResult:
        if name == "zero_filled":
            image, wall, cpu = _timed(lambda: zero_filled(problem.kspace, problem.maps, problem.mask.mask))
            return MethodResult(image, wall, cpu, {})
        return run_cs(problem, name.removesuffix("_oracle"), validation, name.endswith("_oracle"), cs_iterations)

    results, inr = run_beside_inr(methods, baseline, lambda: run_inr(problem, config, seed, device, prior, progress),
                                  overlap)
    return Comparison(problem, results, inr)
