"""``medinr reconstruct``: INR reconstruction of undersampled MRI k-space, with zero-filled and CS baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medinr.checkpoint import save_checkpoint
from medinr.errors import MedinrError
from medinr.fit import seed_everything
from medinr.io import load_image, save_image, take_slice
from medinr.models import MODEL_REGISTRY
from medinr.mri.baselines import CS_METHODS
from medinr.mri.compare import run_methods
from medinr.mri.inr_recon import PRESETS, InrReconConfig, preset_config
from medinr.mri.kspace_io import is_kspace_file, load_kspace
from medinr.mri.problem import problem_from_image, problem_from_kspace
from medinr.mri.report import save_report
from medinr.outputs import OutputDir
from medinr.resources import check_budget
from medinr.validation import check_image_size
from pipelines.common import (
    add_common_arguments,
    axis_index,
    fraction,
    nonnegative_float,
    nonnegative_int,
    number,
    parse_model_options,
    positive_float,
    positive_int,
    resolve_device,
    snr_db,
    write_json,
)

HELP = (
    "Reconstruct undersampled MRI with an INR: from an image (k-space is simulated) or measured k-space "
    "(.npy [coils, ky, kx] or fastMRI .h5), against zero-filled and compressed sensing on the same mask."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image (NIfTI, SimpleITK formats, .npy) or k-space (.npy complex, .h5)")
    add_common_arguments(parser)
    acq = parser.add_argument_group("acquisition")
    acq.add_argument("--accel", type=number(1), default=4.0, help="acceleration of the mask (default 4)")
    acq.add_argument(
        "--mask",
        default=None,
        help="random, equispaced, poisson or a mask FILE (default: random for 2D, poisson for 3D; measured "
        "undersampled k-space keeps its own mask)",
    )
    acq.add_argument("--center-fraction", type=fraction, default=0.08, help="fully sampled centre (default 0.08)")
    acq.add_argument("--coils", type=number(1, 256, integer=True), default=8, help="simulated coils (default 8)")
    acq.add_argument(
        "--maps",
        choices=("simulated", "espirit"),
        default=None,
        help="coil maps for reconstruction (default: simulated for images, espirit for k-space)",
    )
    acq.add_argument("--snr", type=snr_db, default=None, help="complex noise at this SNR in dB (default: none)")
    acq.add_argument("--no-phase", action="store_true", help="simulate without a smooth background phase")
    acq.add_argument("--slice", type=number(integer=True), default=None, help="slice index of a 3D input")
    acq.add_argument("--axis", type=axis_index, default=2, help="axis of --slice (default 2)")
    _add_inr_arguments(parser)
    parser.add_argument(
        "--baselines",
        default="zf,cs",
        help="comma list of zf, cs (both CS methods), l1wavelet, tv (default zf,cs); the CS lambda is chosen "
        "on the same held-out k-space samples as the INR's settings, never on the ground truth",
    )


def _add_inr_arguments(parser: argparse.ArgumentParser) -> None:
    inr = parser.add_argument_group("INR (self-calibrated: held-out samples choose weights, levels and stop)")
    inr.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="fast (about 4x quicker), default or quality")
    inr.add_argument("--model", default="mrgrid", help="INR family (default mrgrid)")
    inr.add_argument("--model-options", default=None, help="JSON object of model options")
    inr.add_argument("--steps", type=positive_int, default=None, help="length of the regularisation path")
    inr.add_argument("--lr", type=positive_float, default=None, help="base learning rate (default: the family's)")
    inr.add_argument("--tv", type=nonnegative_float, default=None,
                     help="fix the total-variation weight (relative units) instead of walking a path of weights")
    inr.add_argument("--wavelet", type=nonnegative_float, default=None,
                     help="fix the L1 Haar-wavelet weight (relative units) instead of walking a path")
    inr.add_argument("--holdout", type=fraction, default=None,
                     help="fraction of acquired readouts (outside the calibration region) held out for the "
                     "self-calibration (default 0.1; 0 disables it: the whole path is walked)")
    inr.add_argument("--final", choices=("refit", "finetune", "split"), default=None,
                     help="after the choice: refit on every sample, continue the split's model on every sample, "
                     "or keep the split's model (default: the preset's)")
    inr.add_argument("--no-whiten", action="store_true", help="do not decorrelate the coils' noise")
    inr.add_argument("--data-consistency", action="store_true", help="re-insert the acquired samples")
    inr.add_argument("--prior", default=None, help="prior IMAGE of the same anatomy and grid (NeRP)")
    inr.add_argument("--prior-steps", type=nonnegative_int, default=200, help="steps of the prior fit (default 200)")


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


def _config(args: argparse.Namespace) -> InrReconConfig:
    """The preset with the user's overrides."""
    if args.model not in MODEL_REGISTRY:
        raise MedinrError(f"unknown model '{args.model}'; choose one of: {', '.join(sorted(MODEL_REGISTRY))}")
    config = preset_config(args.preset)
    config.model, config.model_options = args.model, parse_model_options(args.model_options)
    config.lr, config.data_consistency, config.prior_steps = args.lr, args.data_consistency, args.prior_steps
    config.whiten = not args.no_whiten
    if args.final is not None:
        config.final = args.final
    if args.holdout is not None:
        config.holdout_fraction = args.holdout
    if args.steps is not None:
        config.path.steps = args.steps
    if args.tv is not None:
        config.path.tv_start = config.path.tv_end = args.tv
    if args.wavelet is not None:
        config.path.wavelet_start = config.path.wavelet_end = args.wavelet
    return config


def _problem(args: argparse.Namespace):
    path = Path(args.input)
    if not path.exists():
        raise MedinrError(f"file not found: {path}")
    if is_kspace_file(path):
        measured = load_kspace(path, args.slice)
        check_image_size(measured.geometry.shape, args.input)
        return problem_from_kspace(
            measured, args.mask, args.accel, args.center_fraction, args.maps or "espirit", args.seed
        )
    image, geometry = load_image(path)
    if args.slice is not None:
        image, geometry = take_slice(image, geometry, args.slice, args.axis)
    check_image_size(geometry.shape, args.input)  # before simulating and fitting, not in SSIM at the end
    # k-space, maps, coil images, noise and the operator's buffers: ~8 complex64 arrays per coil
    check_budget(64 * args.coils * image.size, f"simulating {args.coils} coils on a {image.shape} grid")
    mask = args.mask or ("random" if image.ndim == 2 else "poisson")
    return problem_from_image(
        np.abs(image), geometry, mask, args.accel, args.center_fraction, args.coils, args.maps or "simulated",
        args.snr, not args.no_phase, args.seed,
    )


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
    config = _config(args)
    methods = ["zero_filled", *_baselines(args.baselines), "inr"]
    names = ["recon.nii.gz", "zero_filled.nii.gz", "mask.nii.gz", "recon.inr", "metrics.json", "report.png"]
    names += [f"{m}.nii.gz" for m in methods[1:-1]]
    with OutputDir(args.out, names, force=args.force) as out:
        seed_everything(args.seed)
        problem = _problem(args)
        prior = _prior(args, problem.geometry.shape)
        comparison = run_methods(problem, config, tuple(methods), args.seed, device, prior, not args.quiet)
        metrics = {**comparison.metrics(), "inr": config.to_dict(), "seed": args.seed, "device": str(device),
                   "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        write_json(out / "metrics.json", metrics)
        images, geometry = comparison.magnitudes(), problem.geometry
        save_image(out / "recon.nii.gz", images["inr"], geometry)
        for name in methods[:-1]:
            save_image(out / f"{name}.nii.gz", images[name], geometry)
        save_image(out / "mask.nii.gz", problem.mask.mask.astype(np.uint8), geometry, dtype=np.uint8)
        comparison.inr.extra["mask"] = problem.mask.to_dict()
        save_checkpoint(out / "recon.inr", comparison.inr)
        save_report(out / "report.png", images, problem.mask.mask, problem.reference, metrics.get("methods"),
                    comparison.results["inr"].details)
    if not args.quiet:
        summary = ", ".join(f"{n} {m['psnr_tissue']:.2f} dB" for n, m in metrics.get("methods", {}).items()) or (
            f"k-space relative error {metrics['kspace_relative_error']['inr']:.3g}")
        print(f"reconstructed {Path(args.input).name} at {problem.mask.achieved_acceleration:.2f}x: {summary}")
    return 0
