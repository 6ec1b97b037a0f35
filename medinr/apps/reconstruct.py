"""``medinr reconstruct`` as a library call: one undersampled acquisition, the self-calibrated INR and the
baselines on it, scored.

The problem is built once (simulated from an image or read from k-space), with its noise estimate and its
held-out split (:meth:`medinr.mri.problem.ReconProblem.prepared`); every method runs on it
(:func:`medinr.mri.compare.run_methods`). The INR's loop is :func:`medinr.training.fit`, its validation the
held-out readouts (:class:`medinr.training.HeldOutSamples`), its defaults :func:`medinr.models.tasks.
task_defaults` and its settings :mod:`medinr.mri.config`; :func:`medinr.apps.writer.publish` writes the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medinr.apps.requests import ReconstructRequest
from medinr.apps.result import AppResult, Figure, ImageOutput
from medinr.devices import resolve_device
from medinr.errors import MedinrError
from medinr.io import load_image, take_slice
from medinr.models.tasks import task_defaults
from medinr.mri.compare import Comparison, run_methods
from medinr.mri.kspace_io import is_kspace_file, load_kspace
from medinr.mri.problem import ReconProblem, problem_from_image, problem_from_kspace
from medinr.mri.report import save_report
from medinr.resources import check_budget
from medinr.training.loop import seed_everything
from medinr.training.timing import Timings
from medinr.validation import check_image_size


def load_problem(request: ReconstructRequest) -> ReconProblem:
    """The acquisition: measured k-space as it is (undersampled retrospectively when fully sampled), or k-space
    simulated from an image."""
    a, path = request.acquisition, Path(request.input)
    if not path.exists():
        raise MedinrError(f"file not found: {path}")
    if is_kspace_file(path):
        measured = load_kspace(path, a.slice)
        check_image_size(measured.geometry.shape, request.input)
        return problem_from_kspace(measured, a.mask, a.accel, a.center_fraction, a.maps or "espirit", request.seed)
    image, geometry = load_image(path)
    if a.slice is not None:
        image, geometry = take_slice(image, geometry, a.slice, a.axis)
    check_image_size(geometry.shape, request.input)  # before simulating and fitting, not in SSIM at the end
    # k-space, maps, coil images, noise and the operator's buffers: ~8 complex64 arrays per coil
    check_budget(64 * a.coils * image.size, f"simulating {a.coils} coils on a {image.shape} grid")
    mask = a.mask or ("random" if image.ndim == 2 else "poisson")
    return problem_from_image(np.abs(image), geometry, mask, a.accel, a.center_fraction, a.coils,
                              a.maps or "simulated", a.snr, a.phase, request.seed)


def load_prior(request: ReconstructRequest, shape: tuple[int, ...]) -> np.ndarray | None:
    """The prior image (magnitude) on the reconstruction grid, or None."""
    if request.prior is None:
        return None
    prior, geometry = load_image(request.prior)
    a = request.acquisition
    if a.slice is not None and prior.ndim == 3 and len(shape) == 2:
        prior, _ = take_slice(prior, geometry, a.slice, a.axis)
    if tuple(prior.shape) != tuple(shape):
        raise MedinrError(f"--prior has shape {prior.shape}, but the reconstruction grid is {tuple(shape)}")
    return np.abs(prior)


def _outputs(request: ReconstructRequest, comparison: Comparison, scores: dict | None
             ) -> tuple[list[ImageOutput], Figure]:
    problem, images = comparison.problem, comparison.magnitudes()
    geometry = problem.geometry
    out = [ImageOutput("recon.nii.gz", images["inr"], geometry)]
    out += [ImageOutput(f"{name}.nii.gz", images[name], geometry) for name in request.methods[:-1]]
    out.append(ImageOutput("mask.nii.gz", problem.mask.mask.astype(np.uint8), geometry, np.uint8))
    figure = Figure("report.png", save_report, {
        "images": images, "mask": problem.mask.mask, "reference": problem.reference,
        "scores": scores, "inr_details": comparison.results["inr"].details})
    return out, figure


def run(request: ReconstructRequest) -> AppResult:
    """Build the problem, run every method on it, and assemble what is written."""
    timings = Timings()
    with timings.stage("setup"):
        device = resolve_device(request.device)
        seed_everything(request.seed)
        problem = load_problem(request)
        task_defaults(request.inr.model, "reconstruction", problem.geometry.shape)  # an unknown family, before work
        prior = load_prior(request, problem.geometry.shape)
    comparison = run_methods(problem, request.inr, request.methods, request.seed, device, prior, request.progress)
    methods = comparison.timing()
    timings.record("baselines", {name: t for name, t in methods.items() if name != "inr"})
    timings.record("inr", methods["inr"])
    with timings.stage("evaluation"):
        record = {"settings": request.to_dict(), "device": str(device), **comparison.metrics()}
    problem = comparison.problem
    comparison.inr.extra = {**comparison.inr.extra, "mask": problem.mask.to_dict()}
    images, figure = _outputs(request, comparison, record.get("methods"))
    return AppResult(images, {"recon.inr": comparison.inr}, record, timings.to_dict(), [figure],
                     summary(request, problem, record))


def summary(request: ReconstructRequest, problem: ReconProblem, record: dict) -> str:
    scores = ", ".join(f"{n} {m['psnr_tissue']:.2f} dB" for n, m in record.get("methods", {}).items()) or (
        f"k-space relative error {record['kspace_relative_error']['inr']:.3g}")
    return f"reconstructed {Path(request.input).name} at {problem.mask.achieved_acceleration:.2f}x: {scores}"
