"""``medinr reconstruct`` as a library call: one undersampled acquisition, the self-calibrated INR and the
baselines on it, scored.

The problem is built once (simulated from an image or read from k-space), with its noise estimate and its
held-out split (:meth:`medinr.mri.problem.ReconProblem.prepared`); every method runs on it
(:func:`medinr.mri.compare.run_methods`), the baselines beside the INR in a second thread where torch has two
threads or a GPU (:func:`medinr.mri.compare.overlap_baselines`). Non-Cartesian acquisitions (a ``--trajectory``
simulated from an image or fully sampled Cartesian k-space, or ISMRMRD / ``.npz`` samples with their own
trajectory) become a :class:`medinr.mri.noncart_problem.NonCartesianProblem` and run through
:func:`medinr.mri.noncart_compare.run_noncart_methods`: gridding in place of zero filling, the trajectory drawn
in place of the mask. The INR's loop is :func:`medinr.training.fit`, its validation the
held-out readouts (:class:`medinr.training.HeldOutSamples`), its defaults :func:`medinr.models.tasks.
task_defaults` and its settings :mod:`medinr.mri.config`; :func:`medinr.apps.writer.publish` writes the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medinr.apps.requests import ReconstructRequest
from medinr.apps.result import AppResult, Figure, ImageOutput
from medinr.devices import resolve_device
from medinr.errors import MedinrError
from medinr.io import load_image, take_slice
from medinr.models.tasks import task_defaults
from medinr.mri.compare import Comparison, overlap_baselines, run_methods
from medinr.mri.fft import ifftc
from medinr.mri.kspace_io import MeasuredKspace, is_kspace_file, load_kspace
from medinr.mri.measured import acquired_box
from medinr.mri.noncart_compare import run_noncart_methods
from medinr.mri.noncart_kspace import NonCartesianKspace
from medinr.mri.noncart_problem import (
    NonCartesianProblem,
    noncart_problem_from_coil_images,
    noncart_problem_from_image,
    noncart_problem_from_measured,
)
from medinr.mri.problem import ReconProblem, problem_from_image, problem_from_kspace
from medinr.mri.report import save_report
from medinr.resources import check_budget
from medinr.training.loop import seed_everything
from medinr.training.timing import Timings
from medinr.validation import check_image_size


def load_problem(request: ReconstructRequest) -> ReconProblem | NonCartesianProblem:
    """The acquisition: measured k-space as it is (undersampled retrospectively when fully sampled), or k-space
    simulated from an image; along a trajectory when the file has one or ``--trajectory`` asks for one."""
    a, path = request.acquisition, Path(request.input)
    if not path.exists():
        raise MedinrError(f"file not found: {path}")
    if is_kspace_file(path):
        measured = load_kspace(path, a.slice, a.matrix, a.fov, a.keep_oversampling)
        check_image_size(measured.geometry.shape, request.input)
        if isinstance(measured, NonCartesianKspace) or a.trajectory is not None:
            return noncart_from_kspace(measured, request)
        return problem_from_kspace(measured, a.mask, a.accel, a.center_fraction, a.maps or "espirit", request.seed)
    image, geometry = load_image(path)
    if a.slice is not None:
        image, geometry = take_slice(image, geometry, a.slice, a.axis)
    check_image_size(geometry.shape, request.input)  # before simulating and fitting, not in SSIM at the end
    # k-space, maps, coil images, noise and the operator's buffers: ~8 complex64 arrays per coil
    check_budget(64 * a.coils * image.size, f"simulating {a.coils} coils on a {image.shape} grid")
    if a.trajectory is not None:
        _check_2d(geometry.shape, a.trajectory)
        return noncart_problem_from_image(np.abs(image), geometry, a.trajectory, a.spokes, a.coils,
                                          a.maps or "simulated", a.snr, a.phase, a.density, request.seed)
    mask = a.mask or ("random" if image.ndim == 2 else "poisson")
    return problem_from_image(np.abs(image), geometry, mask, a.accel, a.center_fraction, a.coils,
                              a.maps or "simulated", a.snr, a.phase, request.seed)


def _check_2d(shape: tuple[int, ...], trajectory: str) -> None:
    if len(shape) != 2:
        raise MedinrError(f"a {trajectory} trajectory samples a 2D slice; the input is {len(shape)}D "
                          f"{'x'.join(map(str, shape))}: give --slice")


def noncart_from_kspace(measured: MeasuredKspace | NonCartesianKspace, request: ReconstructRequest
                        ) -> NonCartesianProblem:
    """Measured non-Cartesian samples with their own trajectory, or fully sampled Cartesian k-space sampled along
    ``--trajectory`` (its coil images are the truth, as for retrospective Cartesian undersampling)."""
    a = request.acquisition
    if isinstance(measured, NonCartesianKspace):
        if a.trajectory is not None:
            raise MedinrError(f"{request.input} holds non-Cartesian samples with their own trajectory; --trajectory "
                              "simulates one from an image or fully sampled Cartesian k-space")
        return noncart_problem_from_measured(measured, a.maps or "espirit", a.density)
    if acquired_box(measured.acquired()) is None:  # zero-padded edges of a full scan are the same band-limited image
        raise MedinrError(f"{request.input} holds undersampled Cartesian k-space; --trajectory {a.trajectory} "
                          "resamples only fully sampled k-space")
    _check_2d(measured.geometry.shape, a.trajectory)
    if a.maps == "simulated":
        raise MedinrError("--maps simulated needs an image input; measured k-space uses --maps espirit")
    coil_images = ifftc(torch.from_numpy(measured.kspace), 2).numpy()
    return noncart_problem_from_coil_images(coil_images, measured.geometry, a.trajectory, a.spokes, a.snr,
                                            a.density, request.seed)


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
    noncartesian = isinstance(problem, NonCartesianProblem)
    out = [ImageOutput("recon.nii.gz", images["inr"], geometry)]
    out += [ImageOutput(f"{name}.nii.gz", images[name], geometry) for name in images if name != "inr"]
    if not noncartesian:
        out.append(ImageOutput("mask.nii.gz", problem.mask.mask.astype(np.uint8), geometry, np.uint8))
    figure = Figure("report.png", save_report, {
        "images": images, "mask": None if noncartesian else problem.mask.mask, "reference": problem.reference,
        "scores": scores, "inr_details": comparison.results["inr"].details,
        "trajectory": problem.traj if noncartesian else None})
    return out, figure


def _compare(request: ReconstructRequest, problem: ReconProblem | NonCartesianProblem, device: torch.device,
             prior: np.ndarray | None) -> Comparison:
    if isinstance(problem, NonCartesianProblem):
        if request.inr.data_consistency:
            raise MedinrError("--data-consistency needs Cartesian k-space (non-Cartesian samples have no grid to "
                              "be put back on)")
        return run_noncart_methods(problem, request.inr, request.methods, request.seed, device, prior,
                                   request.progress, overlap=overlap_baselines(device))
    return run_methods(problem, request.inr, request.methods, request.seed, device, prior, request.progress,
                       overlap=overlap_baselines(device))


def run(request: ReconstructRequest) -> AppResult:
    """Build the problem, run every method on it, and assemble what is written."""
    timings = Timings()
    with timings.stage("setup"):
        device = resolve_device(request.device)
        seed_everything(request.seed)
        problem = load_problem(request)
        task_defaults(request.inr.model, "reconstruction", problem.geometry.shape)  # an unknown family, before work
        prior = load_prior(request, problem.geometry.shape)
    comparison = _compare(request, problem, device, prior)
    methods = comparison.timing()
    timings.record("baselines", {name: t for name, t in methods.items() if name != "inr"})
    timings.record("inr", methods["inr"])
    with timings.stage("evaluation"):
        record = {"settings": request.to_dict(), "device": str(device), **comparison.metrics()}
    problem = comparison.problem
    if isinstance(problem, NonCartesianProblem):
        comparison.inr.extra = {**comparison.inr.extra, "sampling": record["sampling"]}
    else:
        comparison.inr.extra = {**comparison.inr.extra, "mask": problem.mask.to_dict()}
    images, figure = _outputs(request, comparison, record.get("methods"))
    return AppResult(images, {"recon.inr": comparison.inr}, record, timings.to_dict(), [figure],
                     summary(request, problem, record))


def summary(request: ReconstructRequest, problem: ReconProblem | NonCartesianProblem, record: dict) -> str:
    scores = ", ".join(f"{n} {m['psnr_tissue']:.2f} dB" for n, m in record.get("methods", {}).items()) or (
        f"k-space relative error {record['kspace_relative_error']['inr']:.3g}")
    if isinstance(problem, NonCartesianProblem):
        return f"reconstructed {Path(request.input).name} from {problem.traj.shape[0]} readouts: {scores}"
    # measured undersampled data keep their own mask: --accel did not apply, and the line says so
    own = " (the file's own sampling)" if problem.mask.kind == "measured" else ""
    return f"reconstructed {Path(request.input).name} at {problem.mask.achieved_acceleration:.2f}x{own}: {scores}"
