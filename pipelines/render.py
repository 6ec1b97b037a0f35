"""``medinr render``: one slice of a trained INR at any orientation and zoom, written as PNG or NIfTI."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medinr.checkpoint import load_checkpoint
from medinr.errors import MedinrError
from medinr.io import atomic_path, save_image
from medinr.render import (
    COMPONENTS,
    default_plane,
    default_shape,
    describe,
    fit_fov_to_shape,
    render_plane,
    slice_geometry,
    training_spacing,
    world_ndim,
)
from pipelines.common import resolve_device

HELP = "render a slice of a trained INR (any plane, offset and zoom) to PNG or NIfTI"
SUFFIXES = (".png", ".nii", ".nii.gz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .inr checkpoint (from medinr fit/reconstruct/register)")
    parser.add_argument(
        "--plane", default="axial", help="axial, coronal, sagittal or a normal 'NX,NY,NZ' in RAS mm (default axial)"
    )
    parser.add_argument("--offset", type=float, default=0.0, help="move the plane along its normal, mm (default 0)")
    parser.add_argument("--zoom", type=float, default=1.0, help="magnification about the plane centre (default 1)")
    parser.add_argument("--size", default=None, help="output pixels HxW (default: the training voxel size at zoom 1)")
    parser.add_argument(
        "--component", default="auto", help=f"{', '.join(COMPONENTS)} or a channel number (default auto)"
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
    out = Path(args.out)
    suffix = _suffix(out)
    if out.exists() and not args.force:
        raise MedinrError(f"{out} already exists; use --force to overwrite")
    if out.exists() and out.is_dir():
        raise MedinrError(f"{out} is a folder; --out names a file")
    if not (np.isfinite(args.zoom) and args.zoom > 0):
        raise MedinrError(f"--zoom must be a positive number, got {args.zoom}")
    size = parse_size(args.size) if args.size else None
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    if world_ndim(ckpt) == 2 and args.plane.strip().lower() != "axial":
        raise MedinrError("--plane applies to 3D checkpoints; a 2D checkpoint is shown in its own plane")

    plane = default_plane(ckpt, args.plane, args.offset)
    shape = size or default_shape(plane, training_spacing(ckpt))  # pixel count kept: zoom gives finer pixels
    plane = fit_fov_to_shape(plane.zoomed(args.zoom), shape)
    start = time.perf_counter()
    image = render_plane(ckpt, plane, shape, component=args.component, device=device)
    seconds = time.perf_counter() - start

    if suffix == ".png":
        import matplotlib.image

        with atomic_path(out) as tmp:
            matplotlib.image.imsave(tmp, to_uint8(image), cmap="gray", vmin=0, vmax=255, format="png")
    else:
        save_image(out, image, slice_geometry(ckpt, plane, shape))
    dr, dc = plane.spacing(shape)
    print(
        f"rendered {shape[0]}x{shape[1]} pixels of {dr:.3g}x{dc:.3g} mm in {seconds:.2f} s "
        f"from a {describe(ckpt)} -> {out}"
    )
    return 0
