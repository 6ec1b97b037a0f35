"""``medinr render`` as a library call: one plane of a checkpoint, exact or from its cached lattice.

The rendering itself is :mod:`medinr.render`; :func:`medinr.apps.writer.publish_file` writes the image.
"""

from __future__ import annotations

import time

import numpy as np

from medinr.apps.requests import RenderRequest
from medinr.apps.result import AppResult, ImageOutput
from medinr.checkpoint import load_checkpoint
from medinr.devices import resolve_device
from medinr.errors import MedinrError
from medinr.render import (
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


def run(request: RenderRequest) -> AppResult:
    """Render the plane; the image (values, or for a PNG the values to window) on its slice geometry."""
    ckpt = load_checkpoint(request.checkpoint, device=resolve_device(request.device))
    if ckpt.ndim == 2 and request.plane.strip().lower() != "axial":
        raise MedinrError("--plane applies to 3D checkpoints; a 2D checkpoint is shown in its own plane")
    plane = default_plane(ckpt, request.plane, request.offset)
    shape = tuple(request.size) if request.size else default_shape(plane, ckpt.spacing_mm)  # zoom: finer pixels
    plane = fit_fov_to_shape(plane.zoomed(request.zoom), shape)
    # rendered in row blocks: ~11 bytes per output pixel measured (values, window, PNG encoding); 24 for margin
    check_budget(24 * shape[0] * shape[1], f"a {shape[0]}x{shape[1]} render")
    if request.tier == "lattice":
        cache = cache_path_for(request.checkpoint) if request.cache else None
        lattice = run_steps(cached_lattice_steps(ckpt, request.checkpoint, cache))
        start = time.perf_counter()
        image = render_fast(lattice, ckpt, plane, shape, component=request.component)
    else:
        start = time.perf_counter()
        image = render_plane(ckpt, plane, shape, component=request.component)
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(image)):  # load_checkpoint refuses NaN weights; this catches overflow
        raise MedinrError(f"{request.checkpoint} renders NaN or infinite values here: its weights are damaged")
    dr, dc = plane.spacing(shape)
    kind = "png" if request.png else "image"
    line = (f"rendered {shape[0]}x{shape[1]} pixels of {dr:.3g}x{dc:.3g} mm ({request.tier}) in {seconds:.2f} s "
            f"from a {ckpt.describe()}")
    return AppResult([ImageOutput("slice", image, slice_geometry(ckpt, plane, shape), kind=kind)],
                     timing={"render": seconds}, summary=line)
