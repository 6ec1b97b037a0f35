"""``medinr fit``: fit an INR to a 2D or 3D image and write the checkpoint, the re-sampled image, metrics and a PNG."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medinr.checkpoint import save_checkpoint
from medinr.figures import panel_figure
from medinr.image_fit import fit_image
from medinr.io import load_image, save_image, take_slice
from medinr.metrics import image_metrics
from medinr.outputs import OutputDir
from pipelines.common import add_common_arguments, parse_model_options, resolve_device, write_json

HELP = "fit an INR to an image (NIfTI or any SimpleITK format) and write a checkpoint, the fitted image and metrics"
OUTPUTS = ["model.inr", "fitted.nii.gz", "metrics.json", "comparison.png"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (NIfTI, MHA, NRRD, DICOM folder, .npy)")
    parser.add_argument("--model", default="hashgrid", help="model family (default hashgrid)")
    parser.add_argument("--model-options", default=None, help="JSON object of model options")
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps (default 1000)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the family's)")
    parser.add_argument("--batch-size", type=int, default=1 << 14, help="voxels per step (default 16384)")
    parser.add_argument("--slice", type=int, default=None, help="fit one slice of a 3D image")
    parser.add_argument("--axis", type=int, default=2, help="axis of --slice (default 2)")
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
    )
    seconds = time.perf_counter() - start
    values = ckpt.on_grid()[..., 0]
    metrics = image_metrics(image, values)
    ckpt.extra = {"source": str(Path(args.image).name), "steps": ckpt.history.steps, "seed": args.seed, "metrics": metrics}
    with out:
        save_checkpoint(out / "model.inr", ckpt)
        save_image(out / "fitted.nii.gz", values, geometry)
        write_json(
            out / "metrics.json",
            {
                "metrics": metrics,
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
                    "seed": args.seed,
                    "device": str(device),
                    "slice": args.slice,
                    "axis": args.axis,
                },
            },
        )
        panel_figure(
            {"input": image, f"{args.model} fit": values},
            out / "comparison.png",
            title=f"{args.model}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}",
            error_of={"|error|": ("input", f"{args.model} fit")},
            ncols=3,
        )
    if not args.quiet:
        print(f"PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  ({seconds:.1f} s) -> {args.out}")
    return 0
