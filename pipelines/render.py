"""``medinr render``: one slice of a trained INR at any orientation and zoom, written as PNG or NIfTI.

Thin: the arguments become a :class:`~medinr.apps.requests.RenderRequest`; :mod:`medinr.apps.render` renders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medinr.apps import publish_file
from medinr.apps import run as run_app
from medinr.apps.requests import RenderRequest
from medinr.errors import MedinrError
from medinr.outputs import check_output_file
from medinr.textsafe import terminal_safe
from pipelines.common import finite_float, positive_float

HELP = "render a slice of a trained INR (any plane, offset and zoom) to PNG or NIfTI"
SUFFIXES = (".png", ".nii", ".nii.gz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .inr checkpoint (from medinr fit/reconstruct/register)")
    parser.add_argument(
        "--plane", default="axial", help="axial, coronal, sagittal or a normal 'NX,NY,NZ' in RAS mm (default axial)"
    )
    parser.add_argument(
        "--offset", type=finite_float, default=0.0, help="move the plane along its normal, mm (default 0)"
    )
    parser.add_argument(
        "--zoom", type=positive_float, default=1.0, help="magnification about the plane centre (default 1)"
    )
    parser.add_argument("--size", default=None, help="output pixels HxW (default: the training voxel size at zoom 1)")
    parser.add_argument(
        "--component", default="auto",
        help="auto (default), value, magnitude, real, imag, phase, jacobian or a channel number",
    )
    parser.add_argument(
        "--tier",
        choices=("exact", "lattice"),
        default="exact",
        help="exact: the network at every pixel (default); lattice: interpolate the cached lattice (fast; "
        "built once and kept beside the checkpoint as NAME.inr.lattice)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="with --tier lattice: do not read or write the cache file"
    )
    parser.add_argument("--out", required=True, help="output file: .png, .nii or .nii.gz")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda if available)")


def parse_size(text: str) -> tuple[int, int]:
    """``'HxW'`` -> (H, W)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise MedinrError(f"--size must be HxW in pixels, e.g. 512x512, got '{text}'") from None
    if not (1 <= h <= 16384 and 1 <= w <= 16384):
        raise MedinrError(f"--size must be between 1 and 16384 pixels per side, got {h}x{w}")
    return h, w


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".nii.gz", ".nii", ".png"):
        if name.endswith(s):
            return s
    raise MedinrError(f"--out must end in .png, .nii or .nii.gz, got '{path.name}'")


def request(args: argparse.Namespace, png: bool) -> RenderRequest:
    """The request of one render from its command line."""
    return RenderRequest(device=args.device, checkpoint=args.checkpoint, plane=args.plane, offset=args.offset,
                         zoom=args.zoom, size=parse_size(args.size) if args.size else None, component=args.component,
                         tier=args.tier, cache=not args.no_cache, png=png)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, args.force)  # also: a dangling link, a file as parent folder, an empty name
    png = _suffix(out) == ".png"
    result = run_app(request(args, png))
    publish_file(result, out)
    print(f"{result.summary} -> {terminal_safe(str(out))}")
    return 0
