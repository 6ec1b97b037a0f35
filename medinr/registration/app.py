"""What ``medinr register`` does between parsing and writing: read and check the inputs, register, evaluate.

The pipeline only parses arguments, calls :func:`load_inputs` and :func:`run_registration`, and writes the
arrays and records of the returned :class:`RegistrationOutputs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.filecheck import check_binary
from medinr.geometry import Geometry
from medinr.io import load_image
from medinr.registration.evaluation import (
    dice_per_label,
    hausdorff95_per_label,
    image_ncc,
    jacobian_stats,
    read_landmarks,
    target_registration_error,
)
from medinr.registration.field import dense_displacement, jacobian_map, warp_image
from medinr.registration.register import RegistrationSettings, register_with_inverse
from medinr.validation import check_image_size


@dataclass
class RegistrationInputs:
    """Images, geometries and the optional mask, labels (each on its image's grid) and landmarks, checked."""

    fixed: np.ndarray
    fixed_geometry: Geometry
    moving: np.ndarray
    moving_geometry: Geometry
    paths: dict[str, str | None]
    mask: np.ndarray | None = None
    fixed_labels: np.ndarray | None = None
    moving_labels: np.ndarray | None = None
    fixed_points: np.ndarray | None = None
    moving_points: np.ndarray | None = None


def on_grid(path: str, what: str, geometry: Geometry) -> np.ndarray:
    """A mask/label image on ``geometry``'s grid (resampled by nearest neighbour through world mm if needed)."""
    array, own = load_image(path)
    if own.ndim != geometry.ndim:
        raise MedinrError(f"{what} {path} is {own.ndim}D but its image is {geometry.ndim}D")
    if own == geometry:
        return array
    return warp_image(array, own, np.zeros(geometry.shape + (geometry.ndim,)), geometry, mode="nearest")


def _both_or_neither(a: str | None, b: str | None, what: str) -> None:
    if (a is None) != (b is None):
        raise MedinrError(f"--fixed-{what} and --moving-{what} must be given together")


def load_inputs(fixed: str, moving: str, fixed_mask: str | None = None, fixed_labels: str | None = None,
                moving_labels: str | None = None, fixed_landmarks: str | None = None,
                moving_landmarks: str | None = None) -> RegistrationInputs:
    """Read every input and check it before any output exists (one :class:`MedinrError` line otherwise)."""
    _both_or_neither(fixed_labels, moving_labels, "labels")
    _both_or_neither(fixed_landmarks, moving_landmarks, "landmarks")
    f, fg = load_image(fixed)
    m, mg = load_image(moving)
    check_image_size(fg.shape, fixed)  # one stated minimum for every pipeline (medinr.validation)
    check_image_size(mg.shape, moving)
    if np.iscomplexobj(f) or np.iscomplexobj(m):
        f, m = np.abs(f), np.abs(m)
    if fg.ndim != mg.ndim:
        raise MedinrError(f"fixed image is {fg.ndim}D but moving image is {mg.ndim}D: both must be 2D or 3D alike")
    paths = {"fixed": fixed, "moving": moving, "fixed_mask": fixed_mask, "fixed_labels": fixed_labels,
             "moving_labels": moving_labels, "fixed_landmarks": fixed_landmarks, "moving_landmarks": moving_landmarks}
    inputs = RegistrationInputs(f, fg, m, mg, paths)
    if fixed_mask:
        inputs.mask = on_grid(fixed_mask, "fixed mask", fg)
        check_binary(inputs.mask, f"the fixed mask {fixed_mask}")  # README: a 0..255 mask is refused
        if not np.any(inputs.mask > 0):
            raise MedinrError(f"the fixed mask {fixed_mask} is empty (no voxel inside the fixed image)")
    if fixed_labels:
        inputs.fixed_labels = on_grid(fixed_labels, "fixed labels", fg)
        inputs.moving_labels = on_grid(moving_labels, "moving labels", mg)
    if fixed_landmarks:
        inputs.fixed_points = read_landmarks(fixed_landmarks, fg.ndim)
        inputs.moving_points = read_landmarks(moving_landmarks, fg.ndim)
        if inputs.fixed_points.shape != inputs.moving_points.shape:
            raise MedinrError(f"fixed and moving landmarks differ in number ({len(inputs.fixed_points)} vs "
                              f"{len(inputs.moving_points)})")
    return inputs


@dataclass
class RegistrationOutputs:
    """The fitted fields and everything the pipeline writes."""

    forward: ContinuousImage
    inverse: ContinuousImage | None
    displacement: np.ndarray  # (*fixed shape, ndim) RAS mm on the fixed grid
    warped: np.ndarray
    before: np.ndarray  # the moving image on the fixed grid without deformation
    jacobian: np.ndarray
    warped_labels: np.ndarray | None = None
    inverse_displacement: np.ndarray | None = None  # on the moving grid
    metrics: dict[str, Any] = field(default_factory=dict)


def label_metrics(inputs: RegistrationInputs, u: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Warped moving labels, and Dice and 95 % Hausdorff distance per label before and after."""
    fg, mg = inputs.fixed_geometry, inputs.moving_geometry
    warped = warp_image(inputs.moving_labels, mg, u, fg, mode="nearest")
    before = warp_image(inputs.moving_labels, mg, np.zeros_like(u), fg, mode="nearest")
    spacing = fg.spacing[: fg.ndim]
    return warped, {
        "dice_before": dice_per_label(inputs.fixed_labels, before),
        "dice": dice_per_label(inputs.fixed_labels, warped),
        "hd95_before_mm": hausdorff95_per_label(inputs.fixed_labels, before, spacing),
        "hd95_mm": hausdorff95_per_label(inputs.fixed_labels, warped, spacing),
    }


def inverse_consistency(forward: ContinuousImage, inverse: ContinuousImage, geometry: Geometry,
                        mask: np.ndarray | None = None) -> dict[str, float]:
    """``|x + u(x) + w(x + u(x)) - x|`` over the fixed grid (inside ``mask``): mean and max, mm."""
    x = geometry.world_grid().reshape(-1, geometry.ndim).double().numpy()
    y = x + forward.sample(x)
    err = np.linalg.norm(y + inverse.sample(y) - x, axis=-1)
    if mask is not None:
        err = err[mask.reshape(-1) > 0]
    return {"mean_mm": float(err.mean()), "max_mm": float(err.max())}


def run_registration(inputs: RegistrationInputs, settings: RegistrationSettings, seed: int = 0,
                     device: Any = "cpu", progress: bool = False) -> RegistrationOutputs:
    """Register, then evaluate: NCC, Jacobian, Dice and HD95 (labels), TRE (landmarks), inverse consistency."""
    start = time.perf_counter()
    fg, mg = inputs.fixed_geometry, inputs.moving_geometry
    labels = (inputs.fixed_labels, inputs.moving_labels) if inputs.fixed_labels is not None else None
    forward, inverse = register_with_inverse(inputs.fixed, fg, inputs.moving, mg, settings, inputs.mask, labels,
                                             seed=seed, device=device, progress=progress)
    u = dense_displacement(forward, fg)
    out = RegistrationOutputs(forward, inverse, u, warp_image(inputs.moving, mg, u, fg),
                              warp_image(inputs.moving, mg, np.zeros_like(u), fg), jacobian_map(forward, fg))
    m = out.metrics
    m["ncc_before"] = image_ncc(inputs.fixed, out.before, inputs.mask)
    m["ncc_after"] = image_ncc(inputs.fixed, out.warped, inputs.mask)
    m["jacobian"] = jacobian_stats(out.jacobian, inputs.mask)
    m["displacement_max_mm"] = float(np.linalg.norm(u, axis=-1).max())
    if labels is not None:
        out.warped_labels, label_stats = label_metrics(inputs, u)
        m.update(label_stats)
    if inputs.fixed_points is not None:
        at = forward.sample(inputs.fixed_points)
        m["landmarks"] = target_registration_error(inputs.fixed_points, inputs.moving_points, at)
    if inverse is not None:
        out.inverse_displacement = dense_displacement(inverse, mg)
        m["inverse_consistency"] = inverse_consistency(forward, inverse, fg, inputs.mask)
    m["wall_time_s"] = time.perf_counter() - start
    m["fit_seconds"] = forward.history.seconds
    m["final_loss"] = forward.history.losses[-1]
    m["affine_used"] = forward.output.affine is not None
    return out


def record(inputs: RegistrationInputs, outputs: RegistrationOutputs, preset: str, seed: int, device: Any) -> dict:
    """The metrics.json content (metrics and every setting), and the checkpoint's ``extra`` updated to match."""
    f = outputs.forward
    settings = {**inputs.paths, "preset": preset, **f.extra["settings"], "model_config": f.model.config,
                "parameters": f.model.num_parameters(), "seed": seed, "device": str(device),
                "intensity": f.extra["intensity"], "landmark_format": "CSV, header row, x,y[,z] RAS mm"}
    for image in (f, outputs.inverse):
        if image is not None:
            image.extra.update({"fixed": Path(inputs.paths["fixed"]).name, "moving": Path(inputs.paths["moving"]).name,
                                "metrics": {k: v for k, v in outputs.metrics.items() if k != "landmarks"}})
    return {"metrics": outputs.metrics, "settings": settings}
