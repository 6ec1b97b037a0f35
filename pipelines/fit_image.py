"""``medinr fit``: fit an INR to a 2D or 3D image and write the checkpoint, the re-sampled image, metrics and a PNG."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medinr.checkpoint import save_checkpoint
from medinr.figures import panel_figure
from medinr.image_fit import DEFAULT_HOLDOUT, fit_image, fitted_voxels
from medinr.io import load_image, save_image, take_slice
from medinr.metrics import image_metrics
from medinr.outputs import OutputDir
from medinr.validation import check_image_size
from pipelines.common import (
    add_common_arguments,
    axis_index,
    fraction,
    number,
    parse_model_options,
    positive_float,
    positive_int,
    resolve_device,
    write_json,
)

HELP = "fit an INR to an image (NIfTI or any SimpleITK format) and write a checkpoint, the fitted image and metrics"
OUTPUTS = ["model.inr", "fitted.nii.gz", "metrics.json", "comparison.png"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (NIfTI, MHA, NRRD, DICOM folder, .npy)")
    parser.add_argument("--model", default="hashgrid", help="model family (default hashgrid)")
    parser.add_argument("--model-options", default=None, help="JSON object of model options")
    parser.add_argument("--steps", type=positive_int, default=1000, help="Adam steps (default 1000)")
    parser.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the family's)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=1 << 15, help="network evaluations per step (default 32768)"
    )
    parser.add_argument(
        "--holdout", type=fraction, default=DEFAULT_HOLDOUT,
        help=f"fraction of voxels kept out of the loss to choose the stopping step (default {DEFAULT_HOLDOUT:g}; "
        "0: fit every voxel for --steps)",
    )
    parser.add_argument(
        "--footprint", type=number(1, 4, integer=True), default=2,
        help="sub-voxel points per axis whose mean models a voxel (default 2; 1: the voxel centre)",
    )
    parser.add_argument("--slice", type=int, default=None, help="fit one slice of a 3D image")
    parser.add_argument("--axis", type=axis_index, default=2, help="axis of --slice (default 2)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    out = OutputDir(args.out, OUTPUTS, force=args.force)
    options = parse_model_options(args.model_options)
    device = resolve_device(args.device)
    image, geometry = load_image(args.image)
    if image.dtype.kind == "c":
        image = abs(image)
    if args.slice is not None:
        image, geometry = take_slice(image, geometry, args.slice, args.axis)
    check_image_size(geometry.shape, args.image)  # before the fit, not in SSIM after it
    start = time.perf_counter()
    ckpt = fit_image(
        image,
        geometry,
        model=args.model,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        progress=not args.quiet,
        model_options=options,
        holdout=args.holdout,
        footprint=args.footprint,
    )
    seconds = time.perf_counter() - start
    values = fitted_voxels(ckpt)[..., 0]  # each voxel as the fit models it (its footprint mean)
    metrics = image_metrics(image, values)
    choice = ckpt.extra["fit"]
    ckpt.extra.update({"source": str(Path(args.image).name), "steps": ckpt.history.steps, "seed": args.seed,
                       "metrics": metrics})
    with out:
        save_checkpoint(out / "model.inr", ckpt)
        save_image(out / "fitted.nii.gz", values, geometry)
        write_json(out / "metrics.json", _record(args, ckpt, metrics, seconds, device))
        panel_figure(
            {"input": image, f"{args.model} fit": values},
            out / "comparison.png",
            title=f"{args.model}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}",
            error_of={"|error|": ("input", f"{args.model} fit")},
            ncols=3,
        )
    if not args.quiet:
        print(summary(choice, metrics, seconds, args.out))
    return 0


def _record(args: argparse.Namespace, ckpt, metrics: dict, seconds: float, device) -> dict:
    """What metrics.json holds: grid metrics, training and held-out PSNR, the fit's choices, every setting."""
    choice = ckpt.extra["fit"]
    return {
        "metrics": metrics,
        "train_psnr": choice["train_psnr"],
        "holdout_psnr": choice["holdout_psnr"],
        "fit": choice,
        "wall_time_s": seconds,
        "final_loss": ckpt.history.losses[-1],
        "settings": {
            "image": str(args.image),
            "model": args.model,
            "model_config": ckpt.model.config,
            "parameters": ckpt.model.num_parameters(),
            "steps": args.steps,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "holdout": args.holdout,
            "footprint": args.footprint,
            "seed": args.seed,
            "device": str(device),
            "slice": args.slice,
            "axis": args.axis,
        },
    }


def summary(choice: dict, metrics: dict, seconds: float, out) -> str:
    """The one-line result: training and held-out PSNR (footprint means), the grid PSNR/SSIM, the chosen step."""
    held = choice["holdout_psnr"]
    held_text = f"held-out {held:.2f} dB (best at step {choice['chosen_step']})" if held is not None else "no held-out"
    return (
        f"train {choice['train_psnr']:.2f} dB, {held_text}; on the grid PSNR {metrics['psnr']:.2f} dB "
        f"SSIM {metrics['ssim']:.4f} ({seconds:.1f} s) -> {out}"
    )
