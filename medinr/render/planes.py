"""Planes in world millimetres: oriented rectangles, their pixel grids and the display presets (axial, ...).

Pure geometry: nothing here evaluates a network (see :mod:`medinr.render.products`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError

#: Display frames of the named planes in RAS+ world mm: ``(normal, row axis (down the screen), column axis)``.
#: Anterior/superior point up the screen and the patient's right points right ("neurological" view); the
#: sagittal view shows anterior on the right.
PLANE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "axial": ((0, 0, 1), (0, -1, 0), (1, 0, 0)),
    "coronal": ((0, 1, 0), (0, 0, -1), (1, 0, 0)),
    "sagittal": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
}
#: Screen conventions: "neurological" (patient right on screen right, :data:`PLANE_PRESETS`) and "radiological"
#: (the clinical display: patient right on screen left, as if facing the patient; sagittal anterior on the left).
#: Only the column axis differs, so the normal, and what an offset means, are the same in both.
CONVENTIONS = ("neurological", "radiological")


def preset_frame(name: str, convention: str = "neurological") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Display frame ``(normal, row_axis, col_axis)`` of a named plane in a screen ``convention``."""
    if convention not in CONVENTIONS:
        raise MedinrError(f"the display convention is one of {', '.join(CONVENTIONS)}, got '{convention}'")
    n, r, c = (np.asarray(v, dtype=np.float64) for v in PLANE_PRESETS[name])
    return n, r, (-c if convention == "radiological" else c)


# -- planes --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plane:
    """An oriented rectangle in world millimetres, sampled on a pixel grid by :meth:`world_points`.

    Attributes
    ----------
    centre : ndarray
        World position of the rectangle's centre, mm; 3 components (2 for a 2D checkpoint).
    row_axis, col_axis : ndarray
        Orthonormal world directions of increasing row index (down the screen) and column index.
    fov_mm : tuple of float
        Edge-to-edge extent ``(height, width)`` along ``row_axis`` and ``col_axis``, mm.
    handed : float
        +1 or -1: the normal is ``handed * (row_axis x col_axis)``, so that a view can show the
        anterior (or superior) side up and still have its normal point along +y.

    Notes
    -----
    Pixel ``(r, c)`` of an ``(H, W)`` sampling covers a cell of ``fov/shape`` mm; its centre is at
    ``centre + (r - (H-1)/2) dr row_axis + (c - (W-1)/2) dc col_axis``.
    """

    centre: np.ndarray
    row_axis: np.ndarray
    col_axis: np.ndarray
    fov_mm: tuple[float, float]
    handed: float = 1.0

    def __post_init__(self) -> None:
        c = np.asarray(self.centre, dtype=np.float64).reshape(-1)
        r = np.asarray(self.row_axis, dtype=np.float64).reshape(-1)
        k = np.asarray(self.col_axis, dtype=np.float64).reshape(-1)
        if c.shape != r.shape or c.shape != k.shape or c.shape[0] not in (2, 3):
            raise MedinrError("a plane needs a centre and two axes with the same 2 or 3 components")
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r)) and np.all(np.isfinite(k))):
            raise MedinrError("a plane's centre and axes must be finite")
        nr, nk = np.linalg.norm(r), np.linalg.norm(k)
        if nr < 1e-9 or nk < 1e-9:
            raise MedinrError("a plane's axes must be non-zero vectors")
        r, k = r / nr, k / nk
        if abs(float(r @ k)) > 1e-6:
            raise MedinrError("a plane's row and column axes must be perpendicular")
        fov = tuple(float(f) for f in self.fov_mm)
        if len(fov) != 2 or not all(math.isfinite(f) and f > 0 for f in fov):
            raise MedinrError(f"the field of view must be two positive sizes in mm, got {self.fov_mm}")
        object.__setattr__(self, "centre", c)
        object.__setattr__(self, "row_axis", r)
        object.__setattr__(self, "col_axis", k)
        object.__setattr__(self, "fov_mm", fov)
        object.__setattr__(self, "handed", -1.0 if self.handed < 0 else 1.0)

    @property
    def ndim(self) -> int:
        """Number of world dimensions (3, or 2 for a 2D checkpoint's in-plane world)."""
        return int(self.centre.shape[0])

    @property
    def normal(self) -> np.ndarray:
        """Unit normal ``handed * (row_axis x col_axis)`` (3D planes only)."""
        if self.ndim != 3:
            raise MedinrError("a 2D plane has no normal")
        return self.handed * np.cross(self.row_axis, self.col_axis)

    def spacing(self, shape: Sequence[int]) -> tuple[float, float]:
        """Pixel size ``(dr, dc)`` in mm when sampled on ``shape`` = (H, W)."""
        h, w = shape2(shape)
        return self.fov_mm[0] / h, self.fov_mm[1] / w

    def pixel_matrix(self, shape: Sequence[int]) -> np.ndarray:
        """``(ndim+1, 3)`` matrix taking homogeneous pixel indices ``(r, c, 1)`` to world mm."""
        h, w = shape2(shape)
        dr, dc = self.spacing((h, w))
        m = np.zeros((self.ndim + 1, 3))
        m[: self.ndim, 0] = self.row_axis * dr
        m[: self.ndim, 1] = self.col_axis * dc
        m[: self.ndim, 2] = self.centre - (h - 1) / 2 * dr * self.row_axis - (w - 1) / 2 * dc * self.col_axis
        m[self.ndim, 2] = 1.0
        return m

    def world_points(self, shape: Sequence[int]) -> np.ndarray:
        """World mm of every pixel centre, ``(H, W, ndim)`` float64."""
        h, w = shape2(shape)
        m = self.pixel_matrix((h, w))
        r, c = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        return r[..., None] * m[: self.ndim, 0] + c[..., None] * m[: self.ndim, 1] + m[: self.ndim, 2]

    def affine(self, shape: Sequence[int]) -> np.ndarray:
        """4x4 voxel-to-world affine of the slice stored as an ``(H, W, 1)`` 3D image (3D planes).

        Voxel ``(r, c, 0)`` lands on the world centre of pixel ``(r, c)``; the third column is the normal
        scaled to the smaller pixel size, so the matrix is invertible and right-handed.
        """
        if self.ndim != 3:
            raise MedinrError("use slice_geometry() for a 2D checkpoint's plane")
        m = self.pixel_matrix(shape)
        out = np.eye(4)
        out[:3, 0], out[:3, 1], out[:3, 3] = m[:3, 0], m[:3, 1], m[:3, 2]
        out[:3, 2] = self.normal * min(self.spacing(shape))
        return out

    # -- derived planes ----------------------------------------------------------------------------
    def shifted(self, offset_mm: float) -> "Plane":
        """The same plane moved ``offset_mm`` along its normal."""
        return replace(self, centre=self.centre + float(offset_mm) * self.normal)

    def panned(self, delta_mm: Sequence[float]) -> "Plane":
        """The same plane with its centre moved by ``(d_row, d_col)`` mm within the plane."""
        d = np.asarray(delta_mm, dtype=np.float64)
        return replace(self, centre=self.centre + d[0] * self.row_axis + d[1] * self.col_axis)

    def zoomed(self, zoom: float) -> "Plane":
        """The field of view divided by ``zoom`` (zoom > 1 magnifies)."""
        if not (math.isfinite(zoom) and zoom > 0):
            raise MedinrError(f"zoom must be a positive number, got {zoom}")
        return replace(self, fov_mm=(self.fov_mm[0] / zoom, self.fov_mm[1] / zoom))

    def rotated(self, about_col_deg: float, about_row_deg: float) -> "Plane":
        """Tilt the plane: rotate its frame about its column axis, then about its (new) row axis, in degrees."""
        if self.ndim != 3:
            raise MedinrError("a 2D plane cannot be tilted")
        r1 = _rotation(self.col_axis, math.radians(about_col_deg))
        row, col = r1 @ self.row_axis, self.col_axis
        r2 = _rotation(row, math.radians(about_row_deg))
        return replace(self, row_axis=row, col_axis=r2 @ col)

    def with_fov(self, fov_mm: Sequence[float]) -> "Plane":
        return replace(self, fov_mm=tuple(float(f) for f in fov_mm))

    def region(self, centre_rc_mm: Sequence[float], size_mm: Sequence[float]) -> "Plane":
        """A sub-rectangle: centre ``(row, col)`` mm relative to this plane's top-left corner, size mm.

        This is how the viewer asks for the visible part of the slice: its camera works in plane mm.
        """
        corner = self.centre - self.fov_mm[0] / 2 * self.row_axis - self.fov_mm[1] / 2 * self.col_axis
        c = corner + float(centre_rc_mm[0]) * self.row_axis + float(centre_rc_mm[1]) * self.col_axis
        return replace(self, centre=c, fov_mm=(float(size_mm[0]), float(size_mm[1])))


def shape2(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise MedinrError(f"an output size is two positive integers (H, W), got {shape}") from None
    if h < 1 or w < 1:
        raise MedinrError(f"an output size must be positive, got {h}x{w}")
    return h, w


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit ``axis`` by ``angle`` radians."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def frame_from_normal(
    normal: Sequence[float], convention: str = "neurological"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Display frame ``(normal, row_axis, col_axis)`` for any normal, continuous with the nearest preset.

    The column axis is the nearest preset's column axis (in ``convention``) projected onto the plane and the
    row axis is the preset's row axis made perpendicular to both, so a normal close to +y gives (almost) the
    coronal view, superior up, rather than an arbitrary spin.
    """
    n = np.asarray(normal, dtype=np.float64).reshape(-1)
    if n.shape != (3,) or not np.all(np.isfinite(n)) or np.linalg.norm(n) < 1e-9:
        raise MedinrError(f"a plane normal is three numbers, not all zero, got {list(normal)}")
    n = n / np.linalg.norm(n)
    name = max(PLANE_PRESETS, key=lambda p: abs(float(np.dot(PLANE_PRESETS[p][0], n))))
    _, ref_row, ref_col = preset_frame(name, convention)
    col = ref_col - (ref_col @ n) * n
    if np.linalg.norm(col) < 1e-6:
        col = ref_row - (ref_row @ n) * n
    col /= np.linalg.norm(col)
    row = np.cross(col, n)
    if row @ ref_row < 0:
        row = -row
    return n, row, col


def plane_from_frame(
    centre: Sequence[float],
    normal: Sequence[float],
    row: Sequence[float],
    col: Sequence[float],
    fov_mm: Sequence[float],
) -> Plane:
    """A :class:`Plane` whose :attr:`Plane.normal` is ``normal`` (which must be perpendicular to row and col)."""
    n = np.asarray(normal, dtype=np.float64)
    handed = float(np.sign(n @ np.cross(np.asarray(row, float), np.asarray(col, float)))) or 1.0
    return Plane(np.asarray(centre, float), np.asarray(row, float), np.asarray(col, float), tuple(fov_mm), handed)


def parse_plane_spec(spec: str, convention: str = "neurological") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``'axial'|'coronal'|'sagittal'|'NX,NY,NZ'`` -> display frame ``(normal, row_axis, col_axis)``."""
    text = spec.strip().lower()
    if text in PLANE_PRESETS:
        return preset_frame(text, convention)
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise MedinrError(f"--plane must be axial, coronal, sagittal or a normal 'NX,NY,NZ', got '{spec}'")
    return frame_from_normal(values, convention)


def default_plane(
    image: ContinuousImage,
    spec: str = "axial",
    offset_mm: float = 0.0,
    tilt_deg: Sequence[float] = (0.0, 0.0),
    convention: str = "neurological",
) -> Plane:
    """A plane through the centre of the fitted region that shows all of it.

    Parameters
    ----------
    spec : str
        'axial', 'coronal', 'sagittal' or a normal 'NX,NY,NZ' (ignored for 2D checkpoints, which show their
        own plane with rows along voxel axis i).
    offset_mm : float
        Shift along the normal, mm.
    tilt_deg : tuple of float
        Rotations about the view's column then row axis, degrees (see :meth:`Plane.rotated`); the field
        of view is sized for the tilted plane.
    convention : str
        Screen convention of the view (:data:`CONVENTIONS`): which side of the patient is on screen right.
    """
    ckpt = image
    lo, hi = ckpt.bounds()
    centre = (lo + hi) / 2
    pad = ckpt.voxel_extent()  # the box joins voxel centres: add one voxel so the edge voxels show whole
    if ckpt.ndim == 2:
        if offset_mm:
            raise MedinrError("--offset needs a 3D checkpoint; a 2D checkpoint has a single plane")
        if ckpt.geometry is not None:
            lin = ckpt.geometry.affine_nd[:2, :2]
            row, col = lin[:, 0] / np.linalg.norm(lin[:, 0]), lin[:, 1] / np.linalg.norm(lin[:, 1])
            if abs(float(row @ col)) > 1e-6:  # sheared grid: keep rows, make columns perpendicular
                col = np.array([-row[1], row[0]]) * np.sign(row[0] * col[1] - row[1] * col[0])
        else:
            row, col = np.array([1.0, 0.0]), np.array([0.0, 1.0])
        ext = np.abs(np.stack([row, col])) @ (hi - lo + pad)
        return Plane(centre, row, col, (float(ext[0]), float(ext[1])))
    normal, row, col = parse_plane_spec(spec, convention)
    plane = plane_from_frame(centre, normal, row, col, (1.0, 1.0))
    if any(tilt_deg):
        plane = plane.rotated(float(tilt_deg[0]), float(tilt_deg[1]))
    ext = np.abs(np.stack([plane.row_axis, plane.col_axis])) @ (hi - lo + pad)
    return plane.with_fov((float(ext[0]), float(ext[1]))).shifted(offset_mm)


def default_shape(plane: Plane, spacing_mm: float, max_side: int = 2048) -> tuple[int, int]:
    """Pixel counts that sample ``plane`` at about ``spacing_mm``, capped at ``max_side`` per side."""
    h = max(1, min(max_side, int(round(plane.fov_mm[0] / spacing_mm))))
    w = max(1, min(max_side, int(round(plane.fov_mm[1] / spacing_mm))))
    return h, w


def fit_fov_to_shape(plane: Plane, shape: Sequence[int]) -> Plane:
    """Grow the field of view along one axis so that ``shape`` has square pixels and shows all of it."""
    h, w = shape2(shape)
    step = max(plane.fov_mm[0] / h, plane.fov_mm[1] / w)
    return plane.with_fov((h * step, w * step))
