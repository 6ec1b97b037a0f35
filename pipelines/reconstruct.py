"""``medinr reconstruct``: INR reconstruction of undersampled MRI k-space, with zero-filled and CS baselines.

Thin: the arguments become a :class:`~medinr.apps.requests.ReconstructRequest` (the preset with the user's
overrides); :mod:`medinr.apps.reconstruct` does the work.
"""

from __future__ import annotations

import argparse

from medinr.apps import execute
from medinr.apps.requests import Acquisition, ReconstructRequest
from medinr.errors import MedinrError
from medinr.mri.config import CS_METHODS, DEFAULT_BASELINES, DENSITY_METHODS, PRESETS, TRAJECTORIES, preset_config
from medinr.textsafe import terminal_safe
from medinr.training.final import FINAL_STAGES
from pipelines.common import (
    add_common_arguments,
    axis_index,
    fov_size,
    fraction,
    matrix_size,
    nonnegative_float,
    nonnegative_int,
    number,
    parse_model_options,
    positive_float,
    positive_int,
    snr_db,
)

HELP = (
    "Reconstruct undersampled MRI with an INR: from an image (k-space is simulated on a Cartesian mask or along a "
    "radial or spiral trajectory) or measured k-space (.npy [coils, ky, kx], fastMRI .h5, ISMRMRD .h5 Cartesian or "
    "non-Cartesian, .npz [coils, readouts, samples] with its trajectory), against zero-filled (gridding) and "
    "compressed sensing on the same samples."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image (NIfTI, SimpleITK formats, .npy) or k-space (.npy complex, fastMRI or "
                        "ISMRMRD .h5, non-Cartesian .npz)")
    add_common_arguments(parser)
    acq = parser.add_argument_group("acquisition")
    acq.add_argument("--accel", type=number(1), default=None, help="acceleration of the mask (default 4)")
    acq.add_argument(
        "--mask",
        default=None,
        help="random, equispaced, poisson or a mask FILE (default: random for 2D, poisson for 3D; measured "
        "undersampled k-space keeps its own mask)",
    )
    acq.add_argument("--center-fraction", type=fraction, default=None, help="fully sampled centre (default 0.08)")
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
    acq.add_argument("--keep-oversampling", action="store_true",
                     help="keep the readout oversampling that an ISMRMRD or fastMRI header declares (default: the "
                     "image is cropped to the header's reconstructed field of view, as the scanner's reconstruction "
                     "does)")
    _add_noncartesian_arguments(parser)
    _add_inr_arguments(parser)
    default = ",".join(("zf", *DEFAULT_BASELINES))
    parser.add_argument(
        "--baselines",
        default=default,
        help=f"comma list of zf, cs (both CS methods), l1wavelet, tv (default {default}; cs adds TV and its "
        "lambda sweep); the CS lambda is chosen on the same held-out k-space samples as the INR's settings, never "
        "on the ground truth",
    )


def _add_noncartesian_arguments(parser: argparse.ArgumentParser) -> None:
    nc = parser.add_argument_group("non-Cartesian (ISMRMRD and .npz files bring their own trajectory)")
    nc.add_argument("--trajectory", choices=TRAJECTORIES, default=None,
                    help="sample an image (or fully sampled Cartesian k-space) along golden-angle radial spokes or "
                    "variable-density spiral interleaves instead of a Cartesian mask")
    nc.add_argument("--spokes", "--interleaves", dest="readouts", type=number(1, 65536, integer=True), default=None,
                    help="readouts of --trajectory (default 48 spokes, 16 interleaves)")
    nc.add_argument("--density", choices=DENSITY_METHODS, default="voronoi",
                    help="density compensation of the gridding and of the data term (default voronoi)")
    nc.add_argument("--matrix", type=matrix_size, default=None,
                    help="image matrix of a .npz trajectory file, e.g. 256,256")
    nc.add_argument("--fov", type=fov_size, default=None,
                    help="field of view of a .npz trajectory file in mm, e.g. 220,220")


def _add_inr_arguments(parser: argparse.ArgumentParser) -> None:
    inr = parser.add_argument_group("INR (self-calibrated: held-out samples choose weights, levels and stop)")
    inr.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="fast (about three quarters of the default's time), default or quality (slower)")
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
    inr.add_argument("--coarse-start", type=fraction, default=None, metavar="FRACTION",
                     help="fit the first FRACTION of the path at half the resolution (the centre of k-space; "
                     "Cartesian data, grid models): a speed option, 0.5-0.9x the INR's time, scores -0.6..+0.35 dB "
                     "on the benchmark panel (default 0: off)")
    inr.add_argument("--final", choices=FINAL_STAGES, default=None,
                     help="after the choice: refit on every sample, continue the chosen model on every sample "
                     "(finetune), or keep the split's model (default: the preset's, whose refit is skipped where "
                     "the held-out samples are at the noise level)")
    inr.add_argument("--no-whiten", action="store_true", help="do not decorrelate the coils' noise")
    inr.add_argument("--data-consistency", action="store_true", help="re-insert the acquired samples")
    inr.add_argument("--prior", default=None, help="prior IMAGE of the same anatomy and grid (NeRP)")
    inr.add_argument("--prior-steps", type=nonnegative_int, default=200, help="steps of the prior fit (default 200)")


def baselines(text: str) -> tuple[str, ...]:
    """The CS methods of ``--baselines`` (zero filling always runs)."""
    chosen: list[str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "cs":
            chosen += list(CS_METHODS)
        elif item in ("zf", *CS_METHODS):
            chosen.append(item)
        else:
            raise MedinrError(f"unknown baseline '{item}' (zf, cs, l1wavelet, tv)")
    return tuple(c for i, c in enumerate(chosen) if c not in chosen[:i] and c != "zf")


def _inr(args: argparse.Namespace):
    """The preset with the user's overrides."""
    path = {"steps": args.steps} if args.steps is not None else {}
    if args.tv is not None:
        path |= {"tv_start": args.tv, "tv_end": args.tv}
    if args.wavelet is not None:
        path |= {"wavelet_start": args.wavelet, "wavelet_end": args.wavelet}
    if args.coarse_start is not None:
        path |= {"coarse_fraction": args.coarse_start}
    # a final stage the user names runs whatever the held-out samples hold
    given = {"final": args.final, "holdout_fraction": args.holdout,
             "quiet_held_out": None if args.final is None else 0.0}
    overrides = {k: v for k, v in given.items() if v is not None}
    return preset_config(args.preset, path=path, model=args.model, model_options=parse_model_options(
        args.model_options), lr=args.lr, data_consistency=args.data_consistency, prior_steps=args.prior_steps,
        whiten=not args.no_whiten, **overrides)


def request(args: argparse.Namespace) -> ReconstructRequest:
    """The request of one case from its command line."""
    if args.trajectory is not None and (args.accel is not None or args.center_fraction is not None):
        raise MedinrError("--accel and --center-fraction shape a Cartesian mask; with --trajectory the sampling is "
                          "set by --spokes / --interleaves")
    accel = args.accel if args.accel is not None else 4.0
    centre = args.center_fraction if args.center_fraction is not None else 0.08
    acquisition = Acquisition(accel, args.mask, centre, args.coils, args.maps, args.snr, not args.no_phase,
                              args.slice, args.axis, args.trajectory, args.readouts, args.density, args.matrix,
                              args.fov, args.keep_oversampling)
    return ReconstructRequest(seed=args.seed, device=args.device, progress=not args.quiet, input=args.input,
                              acquisition=acquisition, inr=_inr(args), preset=args.preset,
                              baselines=baselines(args.baselines), prior=args.prior)


def run(args: argparse.Namespace) -> int:
    result = execute(request(args), args.out, args.force, draw_aside=True)
    if not args.quiet:
        print(terminal_safe(result.summary))
    return 0
