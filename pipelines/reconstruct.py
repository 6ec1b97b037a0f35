"""``medinr reconstruct``: INR reconstruction of undersampled MRI k-space, with zero-filled and CS baselines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medinr.checkpoint import save_checkpoint
from medinr.errors import MedinrError
from medinr.fit import seed_everything
from medinr.io import load_image, save_image, take_slice
from medinr.metrics import image_metrics, tissue_mask
from medinr.models import MODEL_REGISTRY
from medinr.mri.baselines import CS_METHODS, cs_sweep_holdout, zero_filled
from medinr.mri.inr_recon import InrReconConfig, inr_reconstruct, reconstructed_image
from medinr.mri.kspace_io import is_kspace_file, load_kspace
from medinr.mri.problem import kspace_relative_error, problem_from_image, problem_from_kspace
from medinr.mri.report import save_report
from medinr.outputs import OutputDir
from pipelines.common import add_common_arguments, parse_model_options, resolve_device, write_json

HELP = (
    "Reconstruct undersampled MRI with an INR: from an image (k-space is simulated) or measured k-space "
    "(.npy [coils, ky, kx] or fastMRI .h5), against zero-filled and compressed sensing on the same mask."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image (NIfTI, SimpleITK formats, .npy) or k-space (.npy complex, .h5)")
    add_common_arguments(parser)
    parser.add_argument("--accel", type=float, default=4.0, help="acceleration of the mask (default 4)")
    parser.add_argument(
        "--mask",
        default=None,
        help="random, equispaced, poisson or a mask FILE (default: random for 2D, poisson for 3D; measured "
        "undersampled k-space keeps its own mask)",
    )
    parser.add_argument("--center-fraction", type=float, default=0.08, help="fully sampled centre (default 0.08)")
    parser.add_argument("--coils", type=int, default=8, help="simulated coils (default 8)")
    parser.add_argument(
        "--maps",
        choices=("simulated", "espirit"),
        default=None,
        help="coil maps for reconstruction (default: simulated for images, espirit for k-space)",
    )
    parser.add_argument("--snr", type=float, default=None, help="complex noise at this SNR in dB (default: none)")
    parser.add_argument("--no-phase", action="store_true", help="simulate without a smooth background phase")
    parser.add_argument("--model", default="mrgrid", help="INR family (default mrgrid)")
    parser.add_argument("--model-options", default=None, help="JSON object of model options")
    parser.add_argument(
        "--steps", type=int, default=InrReconConfig.steps, help=f"fit steps, fixed (default {InrReconConfig.steps})"
    )
    parser.add_argument("--lr", type=float, default=None, help="base learning rate (default: the family's)")
    parser.add_argument(
        "--tv",
        type=float,
        default=InrReconConfig.tv_weight,
        help=f"weight of total variation (default {InrReconConfig.tv_weight})",
    )
    parser.add_argument("--data-consistency", action="store_true", help="re-insert the acquired samples")
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of acquired samples held out to pick the iterate (default 0: fixed steps)",
    )
    parser.add_argument("--prior", default=None, help="prior IMAGE of the same anatomy and grid (NeRP)")
    parser.add_argument("--prior-steps", type=int, default=200, help="steps of the prior fit (default 200)")
    parser.add_argument("--slice", type=int, default=None, help="slice index of a 3D input")
    parser.add_argument("--axis", type=int, default=2, help="axis of --slice (default 2)")
    parser.add_argument(
        "--baselines",
        default="zf,cs",
        help="comma list of zf, cs (both CS methods), l1wavelet, tv (default zf,cs); the CS lambda "
        "is chosen on held-out k-space samples, never on the ground truth",
    )


def _baselines(text: str) -> list[str]:
    chosen: list[str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "cs":
            chosen += list(CS_METHODS)
        elif item in ("zf", *CS_METHODS):
            chosen.append(item)
        else:
            raise MedinrError(f"unknown baseline '{item}' (zf, cs, l1wavelet, tv)")
    return [c for i, c in enumerate(chosen) if c not in chosen[:i] and c != "zf"]


def _problem(args: argparse.Namespace):
    path = Path(args.input)
    if not path.exists():
        raise MedinrError(f"file not found: {path}")
    if is_kspace_file(path):
        measured = load_kspace(path, args.slice)
        return problem_from_kspace(
            measured, args.mask, args.accel, args.center_fraction, args.maps or "espirit", args.seed
        ), measured.geometry
    image, geometry = load_image(path)
    if args.slice is not None:
        image, geometry = take_slice(image, geometry, args.slice, args.axis)
    mask = args.mask or ("random" if image.ndim == 2 else "poisson")
    problem = problem_from_image(
        np.abs(image),
        geometry,
        mask,
        args.accel,
        args.center_fraction,
        args.coils,
        args.maps or "simulated",
        args.snr,
        not args.no_phase,
        args.seed,
    )
    return problem, geometry


def _prior(args: argparse.Namespace, shape: tuple[int, ...]) -> np.ndarray | None:
    if args.prior is None:
        return None
    prior, geometry = load_image(args.prior)
    if args.slice is not None and prior.ndim == 3 and len(shape) == 2:
        prior, _ = take_slice(prior, geometry, args.slice, args.axis)
    if tuple(prior.shape) != tuple(shape):
        raise MedinrError(f"--prior has shape {prior.shape}, but the reconstruction grid is {tuple(shape)}")
    return np.abs(prior)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.model not in MODEL_REGISTRY:
        raise MedinrError(f"unknown model '{args.model}'; choose one of: {', '.join(sorted(MODEL_REGISTRY))}")
    if args.steps < 1:
        raise MedinrError(f"--steps must be at least 1, got {args.steps}")
    methods = _baselines(args.baselines)
    names = ["recon.nii.gz", "zero_filled.nii.gz", "mask.nii.gz", "recon.inr", "metrics.json", "report.png"]
    names += [f"{m}.nii.gz" for m in methods]
    config = InrReconConfig(
        model=args.model,
        model_options=parse_model_options(args.model_options),
        steps=args.steps,
        lr=args.lr,
        tv_weight=args.tv,
        data_consistency=args.data_consistency,
        holdout_fraction=args.holdout,
        prior_steps=args.prior_steps,
    )
    with OutputDir(args.out, names, force=args.force) as out:
        seed_everything(args.seed)
        problem, geometry = _problem(args)
        prior = _prior(args, geometry.shape)
        images: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        extra: dict[str, dict] = {}
        t0 = time.perf_counter()
        complex_images = {"zero_filled": zero_filled(problem.kspace, problem.maps, problem.mask.mask)}
        images["zero_filled"] = np.abs(complex_images["zero_filled"])
        seconds["zero_filled"] = time.perf_counter() - t0
        for method in methods:
            sweep = cs_sweep_holdout(problem.kspace, problem.maps, problem.mask.mask, method, seed=args.seed)
            complex_images[method] = sweep.image
            images[method] = np.abs(sweep.image)
            seconds[method] = float(sum(sweep.seconds))
            extra[method] = {
                "lambda": sweep.lamda,
                "lambdas": sweep.lambdas,
                "holdout_error": sweep.scores,
                "lambda_choice": "lowest error on 5% held-out acquired k-space samples",
            }
        kspace, maps, mask = problem.tensors(device)
        recon = inr_reconstruct(
            kspace, maps, mask, geometry, config, prior=prior, seed=args.seed, progress=not args.quiet, device=device
        )
        complex_images["inr"] = reconstructed_image(recon, kspace, maps, mask, config.data_consistency)
        images["inr"] = np.abs(complex_images["inr"])
        seconds["inr"] = recon.extra["seconds"]
        extra["inr"] = {**recon.extra, "final_loss": recon.history.losses[-1]}

        # What can always be computed, with or without a reference: how well each image explains the data.
        consistency = {n: kspace_relative_error(problem, img) for n, img in complex_images.items()}
        rel = consistency["inr"]
        metrics: dict = {
            "reference": problem.reference_kind,
            "problem": problem.settings,
            "acceleration_achieved": problem.mask.achieved_acceleration,
            "inr": config.to_dict(),
            "seed": args.seed,
            "device": str(device),
            "seconds": seconds,
            "method_details": extra,
            "kspace_relative_error": consistency,
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        }
        titles = {}
        if problem.reference is not None:
            tissue = tissue_mask(problem.reference)
            metrics["methods"] = {n: image_metrics(problem.reference, img, tissue) for n, img in images.items()}
            titles = {n: f"{n}\n{m['psnr_tissue']:.2f} dB (tissue)" for n, m in metrics["methods"].items()}
        write_json(out / "metrics.json", metrics)

        save_image(out / "recon.nii.gz", images["inr"], geometry)
        save_image(out / "zero_filled.nii.gz", images["zero_filled"], geometry)
        for method in methods:
            save_image(out / f"{method}.nii.gz", images[method], geometry)
        save_image(out / "mask.nii.gz", problem.mask.mask.astype(np.uint8), geometry, dtype=np.uint8)
        recon.extra["mask"] = problem.mask.to_dict()
        save_checkpoint(out / "recon.inr", recon)
        save_report(out / "report.png", images, problem.mask.mask, problem.reference, titles)
    if not args.quiet:
        summary = (
            ", ".join(f"{n} {m['psnr_tissue']:.2f} dB" for n, m in metrics.get("methods", {}).items())
            or f"k-space relative error {rel:.3g}"
        )
        print(f"reconstructed {Path(args.input).name} at {problem.mask.achieved_acceleration:.2f}x: {summary}")
    return 0
