"""Image products of a continuous image: one scalar component on a plane or a grid, and where it sits in mm.

Every value comes from :meth:`ContinuousImage.sample` (the one chunked evaluation) or, for 'jacobian', from
:func:`medinr.registration.jacobian.jacobian_determinant`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.registration.jacobian import jacobian_determinant
from medinr.render.planes import Plane, shape2

#: Components that :func:`render_plane` can show besides a channel index.
COMPONENTS = ("auto", "value", "magnitude", "real", "imag", "phase", "jacobian")
#: World points per band of :func:`exact_blocks` (or one network chunk, where that is larger): a cancellation point.
BLOCK_POINTS = 1 << 15


def components_of(image: ContinuousImage) -> list[str]:
    """The components a viewer offers for ``image``, the default first."""
    if image.kind == "complex":
        return ["magnitude", "real", "imag", "phase"]
    if image.kind == "displacement":
        return ["magnitude", "jacobian", *[str(c) for c in range(image.ndim)]]
    return ["value", *[str(c) for c in range(image.model.out_features)]] if image.model.out_features > 1 else ["value"]


def resolve_component(image: ContinuousImage, component: str | int) -> str | int:
    """'auto' made explicit ('value' or 'magnitude'); channel numbers as int; anything else checked."""
    if isinstance(component, (int, np.integer)) or (isinstance(component, str) and component.isdigit()):
        c = int(component)
        if not 0 <= c < image.model.out_features:
            raise MedinrError(f"channel {c} does not exist: the model has {image.model.out_features} output channels")
        return c
    if component == "auto":
        multi = image.kind in ("complex", "displacement") or image.model.out_features > 1
        return "magnitude" if multi else "value"
    if component not in COMPONENTS:
        raise MedinrError(f"unknown component '{component}'; choose one of {', '.join(COMPONENTS)} or a channel number")
    if image.kind != "complex" and component in ("real", "imag", "phase"):
        raise MedinrError(f"'{component}' needs a complex checkpoint, this one is '{image.kind}'")
    if image.kind != "displacement" and component == "jacobian":
        raise MedinrError("'jacobian' needs a displacement (registration) checkpoint")
    return component


def to_component(values: np.ndarray, kind: str, component: str | int = "auto") -> np.ndarray:
    """Reduce ``(..., C)`` output-unit values to one scalar image (see :func:`resolve_component`).

    'magnitude' is the Euclidean norm over channels; 'real', 'imag', 'phase' (radians) apply to complex outputs.
    """
    if isinstance(component, (int, np.integer)) or (isinstance(component, str) and component.isdigit()):
        return values[..., int(component)]
    if component == "auto":
        component = "magnitude" if kind in ("complex", "displacement") or values.shape[-1] > 1 else "value"
    if component in ("value", "real"):
        return values[..., 0]
    if component == "magnitude":
        return np.sqrt(np.sum(values.astype(np.float64) ** 2, axis=-1)).astype(np.float32)
    if component == "imag":
        return values[..., 1]
    if component == "phase":
        return np.arctan2(values[..., 1], values[..., 0]).astype(np.float32)
    raise MedinrError(f"'{component}' is not a component of raw values")


def component_at(
    image: ContinuousImage,
    xyz: np.ndarray | torch.Tensor,
    component: str | int = "auto",
    outside: float | None = 0.0,
    chunk: int | None = None,
) -> np.ndarray:
    """One scalar component at world points ``(..., ndim)`` mm: ``(...)`` float32 in output units."""
    comp = resolve_component(image, component)
    if comp == "jacobian":
        pts = xyz.numpy() if isinstance(xyz, torch.Tensor) else np.asarray(xyz, dtype=np.float64)
        return jacobian_determinant(image, pts, chunk=min(chunk or 8192, 8192))
    return to_component(image.sample(xyz, chunk=chunk, outside=outside), image.kind, comp)


def check_plane(image: ContinuousImage, plane: Plane) -> None:
    if plane.ndim != image.ndim:
        raise MedinrError(f"a {plane.ndim}D plane cannot slice a {image.ndim}D checkpoint")


def exact_blocks(
    image: ContinuousImage,
    plane: Plane,
    shape: Sequence[int],
    component: str | int = "auto",
    outside: float | None = 0.0,
    chunk: int | None = None,
    block_points: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The exact render of ``plane`` a band of rows at a time: yields ``(first_row, rows)``.

    A viewer's worker thread iterates it and can stop between bands (each a few network chunks), so a
    superseded or cancelled render ends within one band.
    """
    image = ContinuousImage.of(image)
    check_plane(image, plane)
    comp = resolve_component(image, component)
    h, w = shape2(shape)
    m = plane.pixel_matrix((h, w))
    nd = plane.ndim
    chunk = image.model.eval_chunk if chunk is None else int(chunk)
    band = max(BLOCK_POINTS, chunk) if block_points is None else int(block_points)  # by default a whole chunk
    step = max(1, band // w)
    cols = np.arange(w, dtype=np.float64)
    for r0 in range(0, h, step):
        rows = np.arange(r0, min(h, r0 + step), dtype=np.float64)
        pts = rows[:, None, None] * m[:nd, 0] + cols[None, :, None] * m[:nd, 1] + m[:nd, 2]
        yield r0, component_at(image, pts, comp, outside=outside, chunk=chunk)


def render_plane(
    image: ContinuousImage,
    plane: Plane,
    shape: Sequence[int],
    component: str | int = "auto",
    chunk: int | None = None,
    outside: float | None = 0.0,
) -> np.ndarray:
    """Evaluate the network at the pixel centres of ``plane`` sampled on ``shape`` = (H, W) (the exact frame).

    Returns
    -------
    ndarray
        ``(H, W)`` float32 in output units ('jacobian' gives det(I + du/dx)); see :func:`to_component`.
    """
    h, w = shape2(shape)
    out = np.empty((h, w), dtype=np.float32)
    for r0, rows in exact_blocks(image, plane, (h, w), component, outside=outside, chunk=chunk):
        out[r0 : r0 + rows.shape[0]] = rows
    return out


def volume_geometry(image: ContinuousImage, max_voxels: int | None = None, spacing_mm: float | None = None) -> Geometry:
    """The grid a volume render uses: the training grid, resampled to ``spacing_mm`` or to fit ``max_voxels``.

    Resampling keeps the field of view (first and last voxel centres) and the orientation of the training
    grid; ``max_voxels`` shrinks every axis by the same factor. A model without a grid gets 64 points per
    axis over its box.
    """
    image = ContinuousImage.of(image)
    if image.geometry is not None:
        geom = image.geometry
    else:
        lo, hi = image.bounds()
        n = image.ndim
        aff = np.eye(n + 1)
        aff[:n, :n] = np.diag((hi - lo) / 63.0)
        aff[:n, n] = lo
        geom = Geometry([64] * n, aff)
    shape = np.asarray(geom.shape, dtype=np.float64)
    if spacing_mm is not None:
        if not spacing_mm > 0:
            raise MedinrError(f"the voxel size must be positive, got {spacing_mm}")
        extent = (shape - 1) * geom.spacing[: geom.ndim]
        shape = np.maximum(1, np.round(extent / spacing_mm) + 1)
    if max_voxels is not None and np.prod(shape) > max_voxels:
        shape = np.maximum(1, np.floor(shape * (max_voxels / np.prod(shape)) ** (1 / len(shape))))
    new_shape = tuple(int(s) for s in shape)
    return geom if new_shape == geom.shape else geom.resized(new_shape)


def render_volume(
    image: ContinuousImage,
    geometry: Geometry | None = None,
    max_voxels: int | None = None,
    component: str | int = "auto",
    chunk: int | None = None,
) -> tuple[np.ndarray, Geometry]:
    """One component on a whole grid (any resolution, any box), a plane of the grid at a time.

    Returns
    -------
    array : ndarray
        ``geometry.shape`` float32 in output units.
    geometry : Geometry
        The grid sampled: ``geometry``, else :func:`volume_geometry` (training grid shrunk to ``max_voxels``).
    """
    image = ContinuousImage.of(image)
    geom = geometry if geometry is not None else volume_geometry(image, max_voxels=max_voxels)
    if geom.ndim != image.ndim:
        raise MedinrError(f"a {geom.ndim}D grid cannot sample a {image.ndim}D checkpoint")
    comp = resolve_component(image, component)
    out = np.empty(geom.shape, dtype=np.float32)
    vox = geom.voxel_grid(dtype=torch.float64)
    for i in range(geom.shape[0]):
        out[i] = component_at(image, geom.voxel_to_world(vox[i]), comp, outside=None, chunk=chunk)
    return out, geom


def slice_geometry(image: ContinuousImage, plane: Plane, shape: Sequence[int]) -> Geometry:
    """Geometry of a rendered slice so that a saved file puts every pixel at its world position in mm.

    A 3D plane gives an ``(H, W, 1)``-style affine (:meth:`Plane.affine`) on a 2D grid; a 2D checkpoint's
    plane is mapped back through the checkpoint's own 4x4 affine, so the slice lands where the image was.
    """
    h, w = shape2(shape)
    if plane.ndim == 3:
        return Geometry((h, w), plane.affine((h, w)))
    pix = plane.pixel_matrix((h, w))  # (3, 3): (r, c, 1) -> in-plane world (x, y, 1)
    geom = ContinuousImage.of(image).geometry
    if geom is None:
        aff = np.eye(4)
        aff[:2, :2], aff[:2, 3] = pix[:2, :2], pix[:2, 2]
        return Geometry((h, w), aff)
    to_vox = np.linalg.inv(geom.affine_nd) @ pix  # pixel -> training voxel (i, j, 1)
    embed = np.eye(4)
    embed[:2, :2], embed[:2, 3] = to_vox[:2, :2], to_vox[:2, 2]
    return Geometry((h, w), geom.affine @ embed)
