"""``medinr register``: register a moving image to a fixed one with an INR displacement field.

Thin: the arguments become a :class:`~medinr.apps.requests.RegisterRequest` (a preset's settings by stage with
the user's overrides, :func:`medinr.registration.settings.settings_from_preset`); :mod:`medinr.apps.register`
does the work.
"""

from __future__ import annotations

import argparse

from medinr.apps import execute
from medinr.apps.requests import RegisterRequest
from medinr.registration.settings import (
    AFFINE_MODES,
    GRID_RATE,
    LOSSES,
    PRESETS,
    TRANSFORMS,
    SVFStage,
    settings_from_preset,
)
from medinr.textsafe import terminal_safe
from pipelines.common import (
    add_common_arguments,
    nonnegative_float,
    number,
    parse_model_options,
    positive_float,
    positive_int,
)

HELP = (
    "register a moving image to a fixed image with an INR displacement field (writes warped image, ITK field, metrics)"
)
#: Flags that set a stage's value (None: the preset's); :func:`settings_from_preset` routes each to its stage.
SETTINGS = ("transform", "model", "steps", "batch", "lr", "loss", "jacobian", "bending", "hyperelastic", "fold",
            "diffusion", "squarings", "affine", "affine_steps", "symmetric", "label_weight", "histogram_match")


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fixed", help="fixed image (NIfTI, MHA, NRRD, DICOM folder, ...)")
    parser.add_argument("moving", help="moving image, resampled onto the fixed grid")
    parser.add_argument("--fixed-mask", help="mask of the fixed image: points are drawn where it is non-zero")
    parser.add_argument("--fixed-labels", help="label image of the fixed image (Dice and 95%% Hausdorff per label)")
    parser.add_argument("--moving-labels", help="label image of the moving image (warped with nearest neighbour)")
    parser.add_argument("--fixed-landmarks", help="CSV with a header row, then x,y[,z] in RAS mm per row")
    parser.add_argument("--moving-landmarks", help="CSV of the matching moving points, same order and format")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_inputs(parser)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="settings preset (default: default)")
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
                        help=f"learning rate (svf grid: fixed voxels per step, default {GRID_RATE:g}, scaled per "
                             "level)")
    parser.add_argument("--loss", choices=LOSSES, default=None, help="similarity: lncc (default), ncc or mse")
    parser.add_argument("--diffusion", type=nonnegative_float, default=None,
                        help=f"svf: weight of the velocity's |grad v|^2 (default {SVFStage.diffusion:g})")
    parser.add_argument("--squarings", type=number(1, 16, integer=True), default=None,
                        help=f"svf: scaling-and-squaring steps of exp(v) (default {SVFStage.squarings})")
    parser.add_argument("--jacobian", type=nonnegative_float, default=None, help="weight of |det J - 1|")
    parser.add_argument("--bending", type=nonnegative_float, default=None, help="weight of the bending energy")
    parser.add_argument("--hyperelastic", type=nonnegative_float, default=None, help="weight of a hyperelastic energy")
    parser.add_argument("--fold", type=nonnegative_float, default=None,
                        help=f"weight of the folding penalty max(0, 0.2 - det J) (default {SVFStage.fold:g})")
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


def request(args: argparse.Namespace) -> RegisterRequest:
    """The request of one case from its command line."""
    overrides = {n: getattr(args, n) for n in SETTINGS}
    options = parse_model_options(args.model_options)
    settings = settings_from_preset(args.preset, **overrides, model_options=options or None)
    return RegisterRequest(seed=args.seed, device=args.device, progress=not args.quiet, fixed=args.fixed,
                           moving=args.moving, fixed_mask=args.fixed_mask, fixed_labels=args.fixed_labels,
                           moving_labels=args.moving_labels, fixed_landmarks=args.fixed_landmarks,
                           moving_landmarks=args.moving_landmarks, settings=settings, preset=args.preset)


def run(args: argparse.Namespace) -> int:
    result = execute(request(args), args.out, args.force, draw_aside=True)
    if not args.quiet:
        print(f"{result.summary}; outputs in {terminal_safe(str(args.out))}")
    return 0
