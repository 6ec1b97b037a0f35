"""``medinr render``: one slice of a trained INR at any orientation and zoom, written as PNG or NIfTI."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medinr.checkpoint import load_checkpoint
from medinr.errors import MedinrError
from medinr.io import atomic_path, save_image
from medinr.outputs import check_output_file
from medinr.render import (
    COMPONENTS,
    cache_path_for,
    cached_lattice_steps,
    default_plane,
    default_shape,
    fit_fov_to_shape,
    render_fast,
    render_plane,
    slice_geometry,
)
from medinr.render.lattice import run_steps
from medinr.resources import check_budget
from pipelines.common import finite_float, positive_float, resolve_device

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
        "--component", default="auto", help=f"{', '.join(COMPONENTS)} or a channel number (default auto)"
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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Window an image for display: its 0.5th..99.5th percentiles onto 0..255."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:  # a nearly constant image: use its full range, or any unit range for a constant
        lo, hi = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1.0
    return np.clip(np.round((image - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, args.force)  # also: a dangling link, a file as parent folder, an empty name
    suffix = _suffix(out)
    if not (np.isfinite(args.zoom) and args.zoom > 0):
        raise MedinrError(f"--zoom must be a positive number, got {args.zoom}")
    size = parse_size(args.size) if args.size else None
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    if ckpt.ndim == 2 and args.plane.strip().lower() != "axial":
        raise MedinrError("--plane applies to 3D checkpoints; a 2D checkpoint is shown in its own plane")

    plane = default_plane(ckpt, args.plane, args.offset)
    shape = size or default_shape(plane, ckpt.spacing_mm)  # pixel count kept: zoom gives finer pixels
    plane = fit_fov_to_shape(plane.zoomed(args.zoom), shape)
    # rendered in row blocks: ~11 bytes per output pixel measured (values, window, PNG encoding); 24 for margin
    check_budget(24 * shape[0] * shape[1], f"a {shape[0]}x{shape[1]} render")
    start = time.perf_counter()
    if args.tier == "lattice":
        cache = None if args.no_cache else cache_path_for(args.checkpoint)
        lattice = run_steps(cached_lattice_steps(ckpt, args.checkpoint, cache))
        start = time.perf_counter()
        image = render_fast(lattice, ckpt, plane, shape, component=args.component)
    else:
        image = render_plane(ckpt, plane, shape, component=args.component)
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(image)):  # load_checkpoint refuses NaN weights; this catches overflow
        raise MedinrError(f"{args.checkpoint} renders NaN or infinite values here: its weights are damaged")

    if suffix == ".png":
        import matplotlib.image

        with atomic_path(out) as tmp:
            matplotlib.image.imsave(tmp, to_uint8(image), cmap="gray", vmin=0, vmax=255, format="png")
    else:
        save_image(out, image, slice_geometry(ckpt, plane, shape))
    dr, dc = plane.spacing(shape)
    print(
        f"rendered {shape[0]}x{shape[1]} pixels of {dr:.3g}x{dc:.3g} mm ({args.tier}) in {seconds:.2f} s "
        f"from a {ckpt.describe()} -> {out}"
    )
    return 0
