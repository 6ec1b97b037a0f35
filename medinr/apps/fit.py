"""``medinr fit`` as a library call: an INR fitted to one image, scored on its grid.

The loop is :func:`medinr.training.fit` (through :func:`medinr.image_fit.fit_image`), the validation the
held-out voxels (:class:`medinr.training.HeldOutVoxels`), the family's defaults :func:`medinr.models.tasks.
task_defaults`; :func:`medinr.apps.writer.publish` writes the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medinr.apps.requests import FitRequest
from medinr.apps.result import AppResult, Figure, ImageOutput
from medinr.devices import resolve_device
from medinr.figures import panel_figure
from medinr.image_fit import fit_image, fitted_voxels
from medinr.io import load_image, take_slice
from medinr.metrics import image_metrics
from medinr.training.timing import Timings
from medinr.validation import check_image_size


def _load(request: FitRequest):
    image, geometry = load_image(request.image)
    if image.dtype.kind == "c":
        image = np.abs(image)
    if request.slice is not None:
        image, geometry = take_slice(image, geometry, request.slice, request.axis)
    check_image_size(geometry.shape, request.image)  # before the fit, not in SSIM after it
    return image, geometry


def run(request: FitRequest) -> AppResult:
    """Fit, score each voxel as the fit models it (its footprint mean), and assemble what is written."""
    timings = Timings()
    with timings.stage("setup"):
        device = resolve_device(request.device)
        image, geometry = _load(request)
    fitted = fit_image(image, geometry, model=request.model, steps=request.steps, lr=request.lr,
                       batch_size=request.batch_size, seed=request.seed, device=device, progress=request.progress,
                       model_options=dict(request.model_options), holdout=request.holdout,
                       footprint=request.footprint)
    for stage, detail in fitted.history.stages.items():
        timings.record(f"fit {stage}", detail)
    with timings.stage("evaluation"):
        values = fitted_voxels(fitted)[..., 0]
        metrics = image_metrics(image, values)
    choice = fitted.extra["fit"]
    fitted.extra = {"fit": choice, "source": Path(request.image).name, "steps": fitted.history.steps,
                    "seed": request.seed, "metrics": metrics}
    record = {
        "settings": request.to_dict(), "device": str(device), "metrics": metrics, "fit": choice,
        "train_psnr": choice["train_psnr"], "holdout_psnr": choice["holdout_psnr"],
        "final_loss": fitted.history.losses[-1],
        "model": {"family": fitted.model.family, "config": fitted.model.config,
                  "parameters": fitted.model.num_parameters()},
    }
    figure = Figure("comparison.png", panel_figure, {
        "panels": {"input": image, f"{request.model} fit": values}, "error_of": {"|error|": ("input",
                                                                                               f"{request.model} fit")},
        "title": f"{request.model}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}", "ncols": 3})
    timing = timings.to_dict()
    return AppResult([ImageOutput("fitted.nii.gz", values, geometry)], {"model.inr": fitted}, record, timing,
                     [figure], summary(choice, metrics, timing["total"]))


def summary(choice: dict, metrics: dict, seconds: float) -> str:
    """The one-line result: training and held-out PSNR (footprint means), the grid PSNR/SSIM, the chosen step."""
    held = choice["holdout_psnr"]
    held_text = f"held-out {held:.2f} dB (best at step {choice['chosen_step']})" if held is not None else "no held-out"
    return (f"train {choice['train_psnr']:.2f} dB, {held_text}; on the grid PSNR {metrics['psnr']:.2f} dB "
            f"SSIM {metrics['ssim']:.4f} ({seconds:.1f} s)")
