"""``medinr register``: register a moving image to a fixed one with an INR displacement field (thin wiring)."""

from __future__ import annotations

import argparse

import numpy as np

from medinr.checkpoint import save_checkpoint
from medinr.io import save_image
from medinr.outputs import OutputDir
from medinr.registration.app import load_inputs, record, run_registration
from medinr.registration.field import write_displacement
from medinr.registration.losses import LOSSES
from medinr.registration.register import AFFINE_MODES, PRESETS, TRANSFORMS, settings_from_preset
from medinr.registration.report import write_report
from pipelines.common import (
    add_common_arguments,
    nonnegative_float,
    number,
    parse_model_options,
    positive_float,
    positive_int,
    resolve_device,
    write_json,
)

HELP = (
    "register a moving image to a fixed image with an INR displacement field (writes warped image, ITK field, metrics)"
)
OUTPUTS = ["warped.nii.gz", "displacement.nii.gz", "jacobian.nii.gz", "transform.inr", "metrics.json", "report.png"]
INVERSE_OUTPUTS = ["inverse_displacement.nii.gz", "inverse_transform.inr"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fixed", help="fixed image (NIfTI, MHA, NRRD, DICOM folder, ...)")
    parser.add_argument("moving", help="moving image, resampled onto the fixed grid")
    parser.add_argument("--fixed-mask", help="mask of the fixed image: points are drawn where it is non-zero")
    parser.add_argument("--fixed-labels", help="label image of the fixed image (Dice and 95%% Hausdorff per label)")
    parser.add_argument("--moving-labels", help="label image of the moving image (warped with nearest neighbour)")
    parser.add_argument("--fixed-landmarks", help="CSV with a header row, then x,y[,z] in RAS mm per row")
    parser.add_argument("--moving-landmarks", help="CSV of the matching moving points, same order and format")
    parser.add_argument(
        "--preset", default="default", choices=sorted(PRESETS), help="settings preset (default: default)"
    )
    parser.add_argument("--transform", choices=TRANSFORMS, default=None,
                        help="svf (default: diffeomorphic velocity field on lattices of the fixed grid) or inr "
                             "(a network of world mm fitted on random points)")
    parser.add_argument("--model", default=None,
                        help="svf: 'grid' (default) or a model family parameterising the velocity; inr: the "
                             "family of u (default siren)")
    parser.add_argument("--model-options", default=None, help="JSON object of model options")
    parser.add_argument("--steps", type=positive_int, default=None, help="Adam steps of the deformable stage")
    parser.add_argument("--batch", type=positive_int, default=None, help="inr: random points per step")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="learning rate (svf grid: fixed voxels per step, default 0.3)")
    parser.add_argument("--loss", choices=LOSSES, default=None, help="similarity: lncc (default), ncc or mse")
    parser.add_argument("--diffusion", type=nonnegative_float, default=None,
                        help="svf: weight of the velocity's |grad v|^2 (default 0.03)")
    parser.add_argument("--squarings", type=number(1, 16, integer=True), default=None,
                        help="svf: scaling-and-squaring steps of exp(v) (default 6)")
    parser.add_argument("--jacobian", type=nonnegative_float, default=None, help="weight of |det J - 1|")
    parser.add_argument("--bending", type=nonnegative_float, default=None, help="weight of the bending energy")
    parser.add_argument("--hyperelastic", type=nonnegative_float, default=None, help="weight of a hyperelastic energy")
    parser.add_argument("--fold", type=nonnegative_float, default=None,
                        help="weight of the folding penalty max(0, 0.2 - det J) (default 3)")
    parser.add_argument("--affine", choices=AFFINE_MODES, default=None,
                        help="affine stage first: auto (default: on unless both images share one grid), on, off")
    parser.add_argument("--affine-steps", type=positive_int, default=None, help="Adam steps of the affine stage")
    parser.add_argument("--symmetric", action="store_true", default=None,
                        help="also give the inverse (moving -> fixed) and write it (svf: exp(-v); inr: a second "
                             "network with inverse consistency)")
    parser.add_argument("--label-weight", type=nonnegative_float, default=None,
                        help="weight of a soft-Dice term on --fixed/--moving-labels (default 0: labels only evaluate)")
    parser.add_argument("--histogram-match", action="store_true", default=None,
                        help="match the moving intensity histogram to the fixed one before fitting")
    add_common_arguments(parser)


def _settings(args: argparse.Namespace):
    names = ("transform", "model", "steps", "batch", "lr", "loss", "jacobian", "bending", "hyperelastic", "fold",
             "diffusion", "squarings", "affine", "affine_steps", "symmetric", "label_weight", "histogram_match")
    settings = settings_from_preset(args.preset, **{n: getattr(args, n) for n in names})
    options = parse_model_options(args.model_options)
    if options:
        settings.model_options = {**(settings.model_options if args.model is None else {}), **options}
    elif args.model is not None and args.model != "siren":
        settings.model_options = {}  # the preset's options belong to its own family (SIREN)
    return settings


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    names = OUTPUTS + (["warped_labels.nii.gz"] if args.fixed_labels else []) + (
        INVERSE_OUTPUTS if settings.symmetric else [])
    out = OutputDir(args.out, names, force=args.force)
    device = resolve_device(args.device)
    inputs = load_inputs(args.fixed, args.moving, args.fixed_mask, args.fixed_labels, args.moving_labels,
                         args.fixed_landmarks, args.moving_landmarks)
    result = run_registration(inputs, settings, seed=args.seed, device=device, progress=not args.quiet)
    metrics_record = record(inputs, result, args.preset, args.seed, device)
    fg, m = inputs.fixed_geometry, result.metrics
    with out:
        save_image(out / "warped.nii.gz", result.warped, fg)
        if result.warped_labels is not None:
            save_image(out / "warped_labels.nii.gz", result.warped_labels, fg, dtype=np.int16)
        write_displacement(out / "displacement.nii.gz", result.displacement, fg)
        save_image(out / "jacobian.nii.gz", result.jacobian, fg)
        save_checkpoint(out / "transform.inr", result.forward)
        if result.inverse is not None:
            write_displacement(out / "inverse_displacement.nii.gz", result.inverse_displacement,
                               inputs.moving_geometry)
            save_checkpoint(out / "inverse_transform.inr", result.inverse)
        write_json(out / "metrics.json", metrics_record)
        write_report(out / "report.png", inputs.fixed, result.before, result.warped, result.displacement,
                     result.jacobian, fg, title=f"NCC {m['ncc_before']:.3f} -> {m['ncc_after']:.3f}, "
                     f"folded {m['jacobian']['folded_percent']:.2f} %")
    if not args.quiet:
        print(f"NCC {m['ncc_before']:.4f} -> {m['ncc_after']:.4f}; det J in [{m['jacobian']['det_min']:.3f}, "
              f"{m['jacobian']['det_max']:.3f}]; {m['wall_time_s']:.1f} s; outputs in {args.out}")
    return 0
