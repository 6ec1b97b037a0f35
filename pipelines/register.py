"""``medinr register``: register a moving image to a fixed one with an INR displacement field (thin wiring)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medinr.checkpoint import save_checkpoint
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import load_image, save_image
from medinr.outputs import OutputDir
from medinr.registration.evaluation import (
    dice_per_label,
    image_ncc,
    jacobian_stats,
    read_landmarks,
    target_registration_error,
)
from medinr.registration.field import dense_displacement, jacobian_map, warp_image, write_displacement
from medinr.registration.losses import LOSSES
from medinr.registration.register import PRESETS, register, settings_from_preset
from medinr.registration.report import write_report
from pipelines.common import add_common_arguments, parse_model_options, resolve_device, write_json

HELP = (
    "register a moving image to a fixed image with an INR displacement field (writes warped image, ITK field, metrics)"
)
OUTPUTS = ["warped.nii.gz", "displacement.nii.gz", "jacobian.nii.gz", "transform.inr", "metrics.json", "report.png"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fixed", help="fixed image (NIfTI, MHA, NRRD, DICOM folder, ...)")
    parser.add_argument("moving", help="moving image, resampled onto the fixed grid")
    parser.add_argument("--fixed-mask", help="mask of the fixed image: points are drawn where it is non-zero")
    parser.add_argument("--fixed-labels", help="label image of the fixed image (Dice per label)")
    parser.add_argument("--moving-labels", help="label image of the moving image (warped with nearest neighbour)")
    parser.add_argument("--fixed-landmarks", help="CSV with a header row, then x,y[,z] in RAS mm per row")
    parser.add_argument("--moving-landmarks", help="CSV of the matching moving points, same order and format")
    parser.add_argument(
        "--preset", default="default", choices=sorted(PRESETS), help="settings preset (default: default)"
    )
    parser.add_argument("--model", default=None, help="model family of u (default siren)")
    parser.add_argument("--model-options", default=None, help="JSON object of model options")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps over all levels")
    parser.add_argument("--batch", type=int, default=None, help="random points per step")
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_argument("--loss", choices=LOSSES, default=None, help="similarity: ncc (default), lncc or mse")
    parser.add_argument("--jacobian", type=float, default=None, help="weight of |det J - 1| (default 0.005)")
    parser.add_argument("--bending", type=float, default=None, help="weight of the bending energy (default 0)")
    parser.add_argument(
        "--hyperelastic", type=float, default=None, help="weight of the hyperelastic energy (default 0)"
    )
    add_common_arguments(parser)


def _on_fixed_grid(path: str, what: str, fixed_geometry: Geometry) -> np.ndarray:
    """A mask/label image on the fixed grid (resampled by nearest neighbour through world mm if needed)."""
    array, geometry = load_image(path)
    if geometry.ndim != fixed_geometry.ndim:
        raise MedinrError(f"{what} {path} is {geometry.ndim}D but the fixed image is {fixed_geometry.ndim}D")
    if geometry == fixed_geometry:
        return array
    zero = np.zeros(fixed_geometry.shape + (fixed_geometry.ndim,))
    return warp_image(array, geometry, zero, fixed_geometry, mode="nearest")


def _pair(a: str | None, b: str | None, what: str) -> None:
    if (a is None) != (b is None):
        raise MedinrError(f"--fixed-{what} and --moving-{what} must be given together")


def run(args: argparse.Namespace) -> int:
    _pair(args.fixed_labels, args.moving_labels, "labels")
    _pair(args.fixed_landmarks, args.moving_landmarks, "landmarks")
    names = OUTPUTS + (["warped_labels.nii.gz"] if args.fixed_labels else [])
    out = OutputDir(args.out, names, force=args.force)
    device = resolve_device(args.device)
    options = parse_model_options(args.model_options)
    settings = settings_from_preset(
        args.preset,
        model=args.model,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        loss=args.loss,
        jacobian=args.jacobian,
        bending=args.bending,
        hyperelastic=args.hyperelastic,
    )
    if options:
        settings.model_options = {**(settings.model_options if args.model is None else {}), **options}
    elif args.model is not None and args.model != "siren":
        settings.model_options = {}  # the default options are SIREN's

    # read and check every input before any output exists
    fixed, fg = load_image(args.fixed)
    moving, mg = load_image(args.moving)
    if np.iscomplexobj(fixed) or np.iscomplexobj(moving):
        fixed, moving = np.abs(fixed), np.abs(moving)
    if fg.ndim != mg.ndim:
        raise MedinrError(
            f"fixed image is {fg.ndim}D but moving image is {mg.ndim}D: both must have the same dimension"
        )
    mask = _on_fixed_grid(args.fixed_mask, "fixed mask", fg) if args.fixed_mask else None
    if mask is not None and not np.any(mask > 0):
        raise MedinrError(f"the fixed mask {args.fixed_mask} is empty (no voxel inside the fixed image)")
    fixed_labels = _on_fixed_grid(args.fixed_labels, "fixed labels", fg) if args.fixed_labels else None
    moving_labels, mlg = load_image(args.moving_labels) if args.moving_labels else (None, None)
    if mlg is not None and mlg.ndim != mg.ndim:
        raise MedinrError(f"moving labels {args.moving_labels} are {mlg.ndim}D but the moving image is {mg.ndim}D")
    fixed_pts = read_landmarks(args.fixed_landmarks, fg.ndim) if args.fixed_landmarks else None
    moving_pts = read_landmarks(args.moving_landmarks, fg.ndim) if args.moving_landmarks else None
    if fixed_pts is not None and fixed_pts.shape != moving_pts.shape:
        raise MedinrError(f"fixed and moving landmarks differ in number ({len(fixed_pts)} vs {len(moving_pts)})")

    start = time.perf_counter()
    field = register(
        fixed, fg, moving, mg, settings, fixed_mask=mask, seed=args.seed, device=device, progress=not args.quiet
    )
    u = dense_displacement(field, fg)
    zero = np.zeros_like(u)
    warped = warp_image(moving, mg, u, fg)
    before = warp_image(moving, mg, zero, fg)
    det = jacobian_map(field, fg)
    metrics: dict = {
        "ncc_before": image_ncc(fixed, before, mask),
        "ncc_after": image_ncc(fixed, warped, mask),
        "jacobian": jacobian_stats(det, mask),
        "displacement_max_mm": float(np.linalg.norm(u, axis=-1).max()),
    }
    warped_labels = None
    if fixed_labels is not None:
        warped_labels = warp_image(moving_labels, mlg, u, fg, mode="nearest")
        metrics["dice_before"] = dice_per_label(fixed_labels, warp_image(moving_labels, mlg, zero, fg, mode="nearest"))
        metrics["dice"] = dice_per_label(fixed_labels, warped_labels)
    if fixed_pts is not None:
        at = field.sample(fixed_pts)
        metrics["landmarks"] = target_registration_error(fixed_pts, moving_pts, at)
    seconds = time.perf_counter() - start
    metrics["wall_time_s"] = seconds
    metrics["fit_seconds"] = field.history.seconds
    metrics["final_loss"] = field.history.losses[-1]
    s = field.extra["settings"]
    record = {
        "fixed": str(args.fixed),
        "moving": str(args.moving),
        "fixed_mask": args.fixed_mask,
        "fixed_labels": args.fixed_labels,
        "moving_labels": args.moving_labels,
        "fixed_landmarks": args.fixed_landmarks,
        "moving_landmarks": args.moving_landmarks,
        "preset": args.preset,
        **s,
        "model_config": field.model.config,
        "parameters": field.model.num_parameters(),
        "seed": args.seed,
        "device": str(device),
        "intensity": field.extra["intensity"],
        "landmark_format": "CSV, header row, x,y[,z] RAS mm",
    }
    field.extra.update(
        {
            "fixed": Path(args.fixed).name,
            "moving": Path(args.moving).name,
            "metrics": {k: v for k, v in metrics.items() if k != "landmarks"},
        }
    )
    with out:
        save_image(out / "warped.nii.gz", warped, fg)
        if warped_labels is not None:
            save_image(out / "warped_labels.nii.gz", warped_labels, fg, dtype=np.int16)
        write_displacement(out / "displacement.nii.gz", u, fg)
        save_image(out / "jacobian.nii.gz", det, fg)
        save_checkpoint(out / "transform.inr", field)
        write_json(out / "metrics.json", {"metrics": metrics, "settings": record})
        write_report(
            out / "report.png",
            fixed,
            before,
            warped,
            u,
            det,
            fg,
            title=f"NCC {metrics['ncc_before']:.3f} -> {metrics['ncc_after']:.3f}, "
            f"folded {metrics['jacobian']['folded_percent']:.2f} %",
        )
    if not args.quiet:
        print(
            f"NCC {metrics['ncc_before']:.4f} -> {metrics['ncc_after']:.4f}; "
            f"det J in [{metrics['jacobian']['det_min']:.3f}, {metrics['jacobian']['det_max']:.3f}]; "
            f"{seconds:.1f} s; outputs in {args.out}"
        )
    return 0
