"""``medinr fit``: fit an INR to a 2D or 3D image and write the checkpoint, the re-sampled image, metrics and a PNG.

Thin: the arguments become a :class:`~medinr.apps.requests.FitRequest`; :mod:`medinr.apps.fit` does the work.
"""

from __future__ import annotations

import argparse

from medinr.apps import execute
from medinr.apps.requests import FitRequest
from medinr.textsafe import terminal_safe
from pipelines.common import (
    add_common_arguments,
    axis_index,
    fraction,
    number,
    parse_model_options,
    positive_float,
    positive_int,
)

HELP = "fit an INR to an image (NIfTI or any SimpleITK format) and write a checkpoint, the fitted image and metrics"
DEFAULT_HOLDOUT = FitRequest.holdout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (NIfTI, MHA, NRRD, DICOM folder, .npy)")
    parser.add_argument("--model", default=FitRequest.model, help=f"model family (default {FitRequest.model})")
    parser.add_argument("--model-options", default=None, help="JSON object of model options")
    parser.add_argument(
        "--steps", type=positive_int, default=None,
        help="most Adam steps of the main stage (default: from the image size; held-out voxels stop it sooner)",
    )
    parser.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the family's)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=None,
        help="network evaluations per step (default: the whole image when its footprint lattice has at most 262144 "
        "points, else random tiles of that size; for families without a lattice path random points: 8192 for "
        "siren, wire and fourier, 32768 for others)",
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


def request(args: argparse.Namespace) -> FitRequest:
    """The request of one case from its command line."""
    return FitRequest(seed=args.seed, device=args.device, progress=not args.quiet, image=args.image,
                      model=args.model, model_options=parse_model_options(args.model_options), steps=args.steps,
                      lr=args.lr, batch_size=args.batch_size, holdout=args.holdout, footprint=args.footprint,
                      slice=args.slice, axis=args.axis)


def run(args: argparse.Namespace) -> int:
    result = execute(request(args), args.out, args.force, draw_aside=True)
    if not args.quiet:
        print(f"{result.summary} -> {terminal_safe(str(args.out))}")
    return 0
