"""Image geometry: the one place that maps voxel indices <-> world millimetres <-> network coordinates.

Conventions (see CONVENTIONS.md): arrays are indexed ``(i, j[, k])`` as nibabel loads them; world
coordinates are millimetres in RAS+ through the image's affine; network coordinates are in [-1, 1] per
axis with -1 and +1 at the centres of the first and last voxel (``align_corners=True``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from medinr.errors import MedinrError

if TYPE_CHECKING:
    import torch

#: numpy arrays or torch tensors (torch is imported only where a tensor is made, so that reading a header and
#: refusing it never waits for torch).
Array = TypeVar("Array")


def _is_tensor(points: object) -> bool:
    torch = sys.modules.get("torch")  # no tensor can exist before torch is imported
    return torch is not None and isinstance(points, torch.Tensor)


def _apply_affine(matrix: np.ndarray, points: Array) -> Array:
    """Apply a homogeneous ``(n+1, n+1)`` matrix to points of shape ``(..., n)``, numpy or torch alike."""
    lin, off = matrix[:-1, :-1], matrix[:-1, -1]
    if _is_tensor(points):
        import torch

        lin_t = torch.as_tensor(lin, dtype=points.dtype, device=points.device)
        off_t = torch.as_tensor(off, dtype=points.dtype, device=points.device)
        if points.dim() == 2:  # one fused product and offset: half the time of the two (float64 on a CPU)
            return torch.addmm(off_t, points, lin_t.T)
        return points @ lin_t.T + off_t
    pts = np.asarray(points, dtype=np.float64)
    return pts @ lin.T + off


def _plane_frame(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal in-plane frame ``(Q, ref)`` for a 2D image whose 4x4 affine places it in 3D.

    A slice lying in the x-y plane (the usual 2D NIfTI or ITK image) keeps world ``(x, y)`` exactly;
    any other plane gets coordinates along its own orthonormalised voxel axes, measured from the point of the
    plane nearest the world origin: a property of the plane, not of the grid, so two grids of the same plane
    (a slice and its 2x block mean) put every point at the same in-plane millimetres.
    """
    cols = affine[:3, :2]
    if np.allclose(cols[2], 0.0):
        return np.eye(3)[:, :2], np.zeros(3)
    q, r = np.linalg.qr(cols)
    q = q * np.sign(np.diag(r))  # keep each axis pointing along its voxel axis
    normal = np.cross(q[:, 0], q[:, 1])
    origin = affine[:3, 3]
    return q, normal * float(normal @ origin)


class Geometry:
    """Voxel grid of an image: its shape and the affine that places it in the world.

    Parameters
    ----------
    shape : sequence of int
        Array shape, 2 or 3 spatial dimensions ``(i, j[, k])``.
    affine : ndarray, optional
        4x4 voxel-to-world matrix in millimetres (RAS+), as in NIfTI. A 3x3 in-plane affine is accepted for
        2D images and embedded at z = 0. Defaults to 1 mm isotropic voxels at the origin.

    Notes
    -----
    World coordinates have as many components as the image has dimensions. For a 2D image they are the
    in-plane millimetres (``(x, y)`` for a slice in the x-y plane); :attr:`affine` keeps the full 4x4 so
    that written files sit at their place in 3D.
    """

    def __init__(self, shape: Sequence[int], affine: np.ndarray | None = None) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise MedinrError(f"an image must have 2 or 3 dimensions of positive size, got shape {shape}")
        self.shape = shape
        if affine is None:
            affine = np.eye(4)
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape == (3, 3) and len(shape) == 2:
            full = np.eye(4)
            full[:2, :2] = affine[:2, :2]
            full[:2, 3] = affine[:2, 2]
            affine = full
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise MedinrError(f"the affine must be a finite 4x4 matrix, got shape {affine.shape}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise MedinrError("the affine is singular: voxel sizes must be non-zero")
        self.affine = affine

    # -- basic properties -------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each array axis, in millimetres."""
        return np.linalg.norm(self.affine[:3, : self.ndim], axis=0)

    @property
    def affine_nd(self) -> np.ndarray:
        """The ``(ndim+1, ndim+1)`` voxel-to-world matrix in the image's own world frame."""
        if self.ndim == 3:
            return self.affine.copy()
        q, ref = _plane_frame(self.affine)
        out = np.eye(3)
        out[:2, :2] = q.T @ self.affine[:3, :2]
        out[:2, 2] = q.T @ (self.affine[:3, 3] - ref)
        return out

    @property
    def network_affine(self) -> np.ndarray:
        """Voxel-to-network matrix: index 0 -> -1, index N-1 -> +1 on each axis."""
        n = np.asarray(self.shape, dtype=np.float64)
        scale = np.where(n > 1, 2.0 / np.maximum(n - 1, 1), 0.0)
        out = np.eye(self.ndim + 1)
        out[: self.ndim, : self.ndim] = np.diag(scale)
        out[: self.ndim, -1] = np.where(n > 1, -1.0, 0.0)
        return out

    @property
    def world_to_network_affine(self) -> np.ndarray:
        """World-mm-to-network matrix (homogeneous): :attr:`network_affine` after the inverse of
        :attr:`affine_nd`."""
        return self.network_affine @ np.linalg.inv(self.affine_nd)

    # -- conversions --------------------------------------------------------------------------------
    def voxel_to_world(self, ijk: Array) -> Array:
        """Voxel indices ``(..., ndim)`` to world millimetres ``(..., ndim)``."""
        return _apply_affine(self.affine_nd, ijk)

    def world_to_voxel(self, xyz: Array) -> Array:
        """World millimetres ``(..., ndim)`` to (fractional) voxel indices."""
        return _apply_affine(np.linalg.inv(self.affine_nd), xyz)

    def voxel_to_network(self, ijk: Array) -> Array:
        return _apply_affine(self.network_affine, ijk)

    def network_to_voxel(self, coords: Array) -> Array:
        n = np.asarray(self.shape, dtype=np.float64)
        inv = np.eye(self.ndim + 1)
        inv[: self.ndim, : self.ndim] = np.diag((n - 1) / 2.0)
        inv[: self.ndim, -1] = (n - 1) / 2.0
        return _apply_affine(inv, coords)

    def world_to_network(self, xyz: Array) -> Array:
        """World millimetres to network coordinates: one affine map (:attr:`world_to_network_affine`)."""
        return _apply_affine(self.world_to_network_affine, xyz)

    def network_to_world(self, coords: Array) -> Array:
        return self.voxel_to_world(self.network_to_voxel(coords))

    def voxel_grid(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """Voxel indices of every voxel, shape ``(*shape, ndim)`` (float32 by default)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        axes = [torch.arange(s, dtype=dtype, device=device) for s in self.shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def network_axes(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """Network coordinates of the voxel centres along each axis, in [-1, 1] (float32 by default): the
        separable lattice whose product is :meth:`network_grid`."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        return [
            torch.linspace(-1.0, 1.0, s, dtype=dtype, device=device) if s > 1
            else torch.zeros(1, dtype=dtype, device=device)
            for s in self.shape
        ]

    def network_grid(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """Network coordinates of every voxel centre, shape ``(*shape, ndim)``, in [-1, 1] (float32 by default)."""
        import torch

        return torch.stack(torch.meshgrid(*self.network_axes(dtype, device), indexing="ij"), dim=-1)

    def world_grid(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """World millimetres of every voxel centre, shape ``(*shape, ndim)`` (float32 by default)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        return self.voxel_to_world(self.voxel_grid(dtype=torch.float64, device=device)).to(dtype)

    def world_box(self) -> "WorldBox":
        """Axis-aligned bounding box of the voxel centres in world millimetres."""
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in self.shape], indexing="ij")).reshape(self.ndim, -1).T
        world = self.voxel_to_world(corners.astype(np.float64))
        return WorldBox(world.min(axis=0), world.max(axis=0))

    # -- derived geometries -------------------------------------------------------------------------
    def resized(self, shape: Sequence[int]) -> "Geometry":
        """The same field of view sampled on a different grid (voxel centres at both ends kept)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.ndim:
            raise MedinrError(f"cannot resize a {self.ndim}D geometry to shape {shape}")
        scale = np.eye(4)
        for a, (old, new) in enumerate(zip(self.shape, shape)):
            scale[a, a] = (old - 1) / (new - 1) if new > 1 else 1.0
        return Geometry(shape, self.affine @ scale)

    # -- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "affine": self.affine.tolist(), "spacing_mm": self.spacing.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        try:
            return cls(data["shape"], np.asarray(data["affine"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise MedinrError(f"geometry metadata is malformed: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self.shape == other.shape and np.allclose(self.affine, other.affine)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        return f"Geometry(shape={self.shape}, spacing_mm=({sp}))"


@dataclass
class WorldBox:
    """A box in world millimetres scaled onto [-1, 1]: the coordinates of world-space networks."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        self.lo = np.asarray(self.lo, dtype=np.float64)
        self.hi = np.asarray(self.hi, dtype=np.float64)
        # a flat axis (a single slice) still needs a non-zero extent to divide by
        self.hi = np.where(self.hi - self.lo > 1e-9, self.hi, self.lo + 1.0)

    @property
    def ndim(self) -> int:
        return int(self.lo.shape[0])

    def _matrix(self) -> np.ndarray:
        m = np.eye(self.ndim + 1)
        m[: self.ndim, : self.ndim] = np.diag(2.0 / (self.hi - self.lo))
        m[: self.ndim, -1] = -1.0 - 2.0 * self.lo / (self.hi - self.lo)
        return m

    def to_network(self, xyz: Array) -> Array:
        return _apply_affine(self._matrix(), xyz)

    def from_network(self, coords: Array) -> Array:
        return _apply_affine(np.linalg.inv(self._matrix()), coords)

    @property
    def half_extent_mm(self) -> np.ndarray:
        """Millimetres per network unit along each axis (to scale displacements)."""
        return (self.hi - self.lo) / 2.0

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorldBox":
        try:
            return cls(np.asarray(data["lo"]), np.asarray(data["hi"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MedinrError(f"world box metadata is malformed: {exc}") from None


#: Points from which :func:`sample_grid` splits its work over the CPU threads (from 16k points the split is
#: faster on 2 cores in 2D and 3D: 46k points of a 1 mm brain, a viewer's cached frame, 0.58 ms instead of 0.94).
SPLIT_POINTS = 16384


def sample_grid(
    image: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Interpolate an image at network coordinates.

    Parameters
    ----------
    image : Tensor
        ``(C, *shape)`` or ``(*shape)`` with 2 or 3 spatial dimensions indexed ``(i, j[, k])``.
    coords : Tensor
        ``(..., ndim)`` network coordinates in the ``(i, j[, k])`` order of the array.
    mode : {'bilinear', 'nearest', 'bicubic'}
        'bilinear' is trilinear in 3D.
    padding_mode : {'border', 'zeros', 'reflection'}

    Returns
    -------
    Tensor
        ``(..., C)``, or ``(...)`` when ``image`` had no channel axis.

    Notes
    -----
    This is the only place in medinr that reconciles the ``(i, j[, k])`` order with ``grid_sample``, which
    expects ``x`` to index the last array axis: it hands the sampler the image with its axes reversed.
    """
    import torch
    import torch.nn.functional as F

    ndim = coords.shape[-1]
    squeeze = image.dim() == ndim
    if (ndim == 3 and mode == "bilinear" and padding_mode == "border" and image.device.type == "cpu"
            and not torch.is_grad_enabled()):
        slab = _slab_of_plane(image, coords)
        if slab is not None:
            return slab
    img = image.unsqueeze(0) if squeeze else image
    lead = coords.shape[:-1]
    flat = coords.reshape(-1, ndim).to(img.dtype)
    # the image's axes reversed (a view; the sampler reads any strides) instead of the coordinates' order: the
    # same values, without a copy of the points and its backward (2-3 ms of a 2 mm brain's warp, 600k points)
    img = img.permute(0, *range(ndim, 0, -1))
    n = flat.shape[0]
    # torch's CPU sampler runs one thread per batch item: the points split into one batch item per thread, over
    # the same image (a view), give the same values twice as fast on 2 cores (a registration's warp)
    split = img.device.type == "cpu" and n >= SPLIT_POINTS and not (torch.is_grad_enabled() and img.requires_grad)
    parts = torch.get_num_threads() if split else 1
    pad = -n % parts
    if pad:
        flat = torch.cat([flat, flat[:pad]])
    # the points along the sampler's last output axis: its inner loop runs there (15-30 % faster forward and
    # backward on CPU than the same points along the first axis, the same values)
    grid = flat.reshape((parts,) + (1,) * (ndim - 1) + (-1, ndim))
    batch = img.unsqueeze(0).expand(parts, *img.shape)
    out = F.grid_sample(batch, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    out = out.reshape(parts, img.shape[0], -1).transpose(1, 2).reshape(-1, img.shape[0])[:n]
    out = out.reshape(*lead, img.shape[0])
    return out[..., 0] if squeeze else out


def _slab_of_plane(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor | None:
    """:func:`sample_grid` (trilinear, border) of points that share one coordinate, e.g. the pixels of an axial,
    coronal or sagittal plane: the two image slices either side of it, blended, sampled bilinearly (None when no
    coordinate is shared by every point).

    Trilinear interpolation is linear along each axis, so this is the same interpolation to float rounding; the
    2D sampler is vectorised where the 3D one is not: 16384 points of a 64^3 x 4 feature grid, 2 threads, 0.79 ->
    0.39 ms; an exact 910 x 606 frame of the viewer's sample (``mrgrid``) on its axial, coronal and sagittal
    planes 242, 274, 322 -> 201, 227, 257 ms (interleaved medians). With gradients (fits, registration) or on a
    GPU (whose 3D sampler is fast) the 3D sampler runs.
    """
    import torch

    flat = coords.reshape(-1, 3)
    # the first and last points settle it for almost any other set of points (a warp's, a displacement's), at
    # the cost of one small comparison instead of a pass over all of them (a registration samples its velocity
    # lattice without gradients 380 times)
    if flat.shape[0] < 2:
        return None
    # then only an axis the two share is checked over every point (a third of a min-max pass over all three)
    shared = (flat[0] == flat[-1]).nonzero().flatten().tolist()
    axis = next((a for a in shared if bool((flat[:, a] == flat[0, a]).all())), None)
    if axis is None:
        return None
    lead = 0 if image.dim() == 3 else 1
    n = image.shape[lead + axis]
    # grid_sample's own unnormalisation (align_corners=True) and border clamp of the shared coordinate
    u = min(max((float(flat[0, axis].to(image.dtype)) + 1.0) * 0.5 * (n - 1), 0.0), n - 1.0)
    k0 = min(int(u), max(n - 2, 0))
    fraction = u - k0
    slab = image.select(lead + axis, k0)
    if fraction > 0.0:
        slab = torch.lerp(slab, image.select(lead + axis, k0 + 1), fraction)
    # the other two coordinates as a view (a stride-2 one for the middle axis): the sampler reads it, where an
    # index list copied the points through a slow gather once per level
    rest = coords[..., 1:] if axis == 0 else coords[..., ::2] if axis == 1 else coords[..., :2]
    return sample_grid(slab, rest)
