"""An image as fitting data: voxel centres, values, the footprint each voxel averages over, and the held-out voxels.

A voxel of a real image is not a point sample: it is (close to) the mean of the object over the voxel's
footprint. Fitting the network's *mean over the footprint* to the voxel value, rather than its value at the
centre, makes the fitted continuous image an estimate of the object itself (deconvolved by the voxel box), which
is what a zoomed render or an oblique slice wants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.splits import split_units

#: Offset of the held-out draw's generator from the fit's seed, so the split is not the batch stream of that seed.
SPLIT_SEED_OFFSET = 7919


def footprint_offsets(shape: tuple[int, ...], points_per_axis: int) -> torch.Tensor:
    """Sub-voxel sample offsets in network units: the midpoints of ``points_per_axis`` equal parts per axis.

    Their mean over a voxel is the midpoint-rule quadrature of the box average (exact for functions linear
    inside the voxel). ``points_per_axis = 1`` is the voxel centre alone.

    Returns
    -------
    Tensor
        ``(points_per_axis ** d, d)`` offsets; an axis of one voxel gets no spread.
    """
    if int(points_per_axis) < 1:
        raise MedinrError(f"footprint points per axis must be at least 1, got {points_per_axis}")
    k = int(points_per_axis)
    part = (torch.arange(k, dtype=torch.float64) + 0.5) / k - 0.5  # in voxels, centred
    axes = [part * (2.0 / (n - 1)) if n > 1 else torch.zeros(k, dtype=torch.float64) for n in shape]
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    return offsets.to(torch.float32)


def footprint_axes(shape: tuple[int, ...], points_per_axis: int,
                   device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """The footprint points of every voxel as a separable lattice: per axis, ``points_per_axis`` sub-voxel
    midpoints of each voxel in turn (``n * points_per_axis`` network coordinates, voxel-major).

    ``meshgrid(*axes)`` holds the points of :func:`footprint_offsets` around every voxel centre; block ``i`` of
    ``points_per_axis`` entries along an axis belongs to voxel ``i`` (:func:`lattice_voxel_means` takes them back).
    """
    k = int(points_per_axis)
    if k < 1:
        raise MedinrError(f"footprint points per axis must be at least 1, got {points_per_axis}")
    axes = []
    for n in shape:
        index = torch.arange(n * k, dtype=torch.float64)
        voxel = index.div(k, rounding_mode="floor") + ((index % k) + 0.5) / k - 0.5
        axes.append((voxel * (2.0 / (n - 1)) - 1.0 if n > 1 else torch.zeros_like(voxel)).to(torch.float32))
    return [a.to(device) for a in axes]


def lattice_voxel_means(values: torch.Tensor, points_per_axis: int) -> torch.Tensor:
    """Footprint means from a footprint lattice ``(n_0 k, ..., C)`` (:func:`footprint_axes`): ``(n_0, ..., C)``."""
    k = int(points_per_axis)
    if k == 1:
        return values
    d = values.dim() - 1
    split = [v for n in values.shape[:d] for v in (n // k, k)]
    return values.reshape(*split, values.shape[-1]).mean(dim=tuple(range(1, 2 * d, 2)))


def voxel_holdout(known: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the known voxels into (fit, held-out) flat index arrays, sorted, disjoint, covering ``known``.

    The one hold-out rule (:func:`medinr.splits.split_units`) with a voxel as the unit and nothing protected:
    ``fraction`` of the known voxels (rounded, at least one when ``fraction > 0``), drawn from
    ``seed +`` :data:`SPLIT_SEED_OFFSET`.
    """
    known = np.asarray(known, dtype=bool)
    if not known.any():
        raise MedinrError("no voxel is known: nothing to fit")
    held = split_units(known.reshape(-1), fraction, seed, seed_offset=SPLIT_SEED_OFFSET, min_units=1)
    flat = known.reshape(-1)
    return np.flatnonzero(flat & ~held), np.flatnonzero(held)


@dataclass
class VoxelData:
    """What a fit sees: voxel centres ``coords (N, d)`` in network units, values ``target (N, C)``, the
    footprint ``offsets (P, d)``, and which voxels enter the loss (``fit``) or only score it (``held``)."""

    coords: torch.Tensor
    target: torch.Tensor
    offsets: torch.Tensor
    fit: torch.Tensor
    held: torch.Tensor
    shape: tuple[int, ...]

    @classmethod
    def from_image(
        cls,
        values: np.ndarray,
        geometry: Geometry,
        footprint: int = 2,
        holdout: float = 0.0,
        seed: int = 0,
        known: np.ndarray | None = None,
        device: str | torch.device = "cpu",
    ) -> "VoxelData":
        """Voxel data of a normalised real image ``values`` on ``geometry``'s grid.

        ``known`` (bool, the grid's shape) marks the voxels that are data; the others are neither fitted nor
        scored (a benchmark predicting withheld pixels passes its own mask here).
        """
        if known is None:
            known = np.ones(geometry.shape, dtype=bool)
        if tuple(np.shape(known)) != tuple(geometry.shape):
            raise MedinrError(f"the known-voxel mask has shape {np.shape(known)}, the image {geometry.shape}")
        fit, held = voxel_holdout(known, holdout, seed)
        coords = geometry.network_grid(device=device).reshape(-1, geometry.ndim)
        target = torch.as_tensor(np.asarray(values), dtype=torch.float32, device=device).reshape(coords.shape[0], -1)
        return cls(
            coords=coords,
            target=target,
            offsets=footprint_offsets(tuple(geometry.shape), footprint).to(device),
            fit=torch.as_tensor(fit, device=device),
            held=torch.as_tensor(held, device=device),
            shape=tuple(geometry.shape),
        )

    @property
    def voxel(self) -> torch.Tensor:
        """Voxel size in network units per axis ``(d,)`` (2 / (n - 1); 2 for an axis of one voxel)."""
        return torch.tensor([2.0 / (n - 1) if n > 1 else 2.0 for n in self.shape], device=self.coords.device)

    @property
    def half_width(self) -> torch.Tensor:
        """Half the voxel's box per axis in network units ``(d,)``: ``1 / (n - 1)``, and 0 for an axis of one
        voxel (no spread, as :func:`footprint_offsets`)."""
        return torch.tensor([1.0 / (n - 1) if n > 1 else 0.0 for n in self.shape], device=self.coords.device)

    @property
    def points_per_voxel(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def footprint(self) -> int:
        """Footprint points per axis (``points_per_voxel = footprint ** d``)."""
        return int(round(self.points_per_voxel ** (1.0 / len(self.shape))))

    def mask(self, index: torch.Tensor) -> torch.Tensor:
        """The voxels ``index`` (flat) as a float mask of the grid's shape (1 inside, 0 elsewhere)."""
        out = torch.zeros(math.prod(self.shape), device=self.coords.device)
        out[index] = 1.0
        return out.reshape(self.shape)

    def all_known(self) -> torch.Tensor:
        """Every voxel that is data (fit and held-out), sorted."""
        return torch.sort(torch.cat([self.fit, self.held])).values


def footprint_mean(model: torch.nn.Module, coords: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The network's mean over each voxel's footprint: ``coords (M, d)``, ``offsets (P, d)`` -> ``(M, C)``.

    Differentiable (training); for large ``M`` without gradients use :func:`evaluate_footprint`.
    """
    points = coords[:, None, :] + offsets[None, :, :]
    out = model(points.reshape(-1, coords.shape[-1]))
    return out.reshape(coords.shape[0], offsets.shape[0], -1).mean(dim=1)


def paired_footprint_mean(model: torch.nn.Module, coords: torch.Tensor, half_width: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """A random estimate of the network's mean over each voxel's box from two points: ``coords (M, d)`` ->
    ``(M, C)``.

    Each voxel draws one offset ``u`` uniform in its box (``|u_i| <= half_width_i``, network units) and takes
    ``(f(c + u) + f(c - u)) / 2``. The pair is antithetic: the linear part of ``f`` cancels, so the estimate is
    exact for ``f`` linear in the voxel and unbiased for ``f`` quadratic in it (its mean over ``u`` is then the
    box mean). Two points per voxel instead of the ``k^d`` midpoints of :func:`footprint_mean` (8 in 3D with
    ``k = 2``). Its variance, ``Var(u^T H u) / 4`` (``H`` the Hessian), adds a small penalty on the curvature
    inside voxels to the squared error it enters.
    """
    u = (torch.rand(coords.shape, generator=generator).to(coords.device) * 2.0 - 1.0) * half_width
    out = model(torch.cat([coords + u, coords - u]))
    return 0.5 * (out[: coords.shape[0]] + out[coords.shape[0]:])


@torch.no_grad()
def evaluate_footprint(model, coords: torch.Tensor, offsets: torch.Tensor, chunk: int = 1 << 14) -> torch.Tensor:
    """:func:`footprint_mean` without gradients, through the model's chunked ``evaluate``: ``(M, C)``."""
    points = (coords[:, None, :] + offsets[None, :, :]).reshape(-1, coords.shape[-1])
    out = model.evaluate(points, chunk=chunk)
    return out.reshape(coords.shape[0], offsets.shape[0], -1).mean(dim=1)


def lattice_footprint_means(model, shape: tuple[int, ...], points_per_axis: int,
                            slab_points: int = 1 << 20) -> torch.Tensor:
    """Footprint means of every voxel of ``shape`` through a separable model's lattice path
    (:meth:`~medinr.models.INR.forward_axes`), without gradients, a slab of voxels along the first axis at a time
    (at most ``slab_points`` network points per slab): ``(*shape, C)``.

    Equal to :func:`evaluate_footprint` at every voxel (the same points), at a third of its cost on a 128^3 grid.
    """
    k = int(points_per_axis)
    device = next(model.parameters()).device
    axes = footprint_axes(tuple(shape), k, device)
    per_slice = k ** len(shape) * math.prod(shape[1:])
    rows = max(1, int(slab_points) // max(1, per_slice))
    slabs = []
    with torch.no_grad():
        for start in range(0, shape[0], rows):
            stop = min(shape[0], start + rows)
            out = model.forward_axes([axes[0][start * k: stop * k], *axes[1:]])
            slabs.append(lattice_voxel_means(out, k))
    return torch.cat(slabs, dim=0)


def smoothness_penalty(
    model: torch.nn.Module, n_points: int, voxel: torch.Tensor, generator: torch.Generator, reach: float = 0.5
) -> torch.Tensor:
    """Curvature at random off-grid points: ``mean |f(x + v) - 2 f(x) + f(x - v)|^2``, ``|v|`` = ``reach`` voxels.

    ``x`` is uniform in the network box [-1, 1]^d (anywhere, not only at voxel centres: the network is
    continuous) and ``v`` a random direction of ``reach`` voxels (``voxel`` ``(d,)``: network units per voxel).
    The footprint means leave what happens inside a voxel free (any pattern with zero mean over the footprint
    fits the data as well); a small weight of this thin-plate-like penalty picks the smoothest of those
    solutions, as a cubic spline is the smoothest interpolant, without blurring what the voxels pin down.
    """
    d = voxel.numel()
    x = torch.rand(n_points, d, generator=generator).to(voxel.device) * 2 - 1
    v = torch.randn(n_points, d, generator=generator).to(voxel.device)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) * (voxel * reach)
    f = model(torch.cat([x - v, x, x + v])).reshape(3, n_points, -1)
    return (f[0] - 2 * f[1] + f[2]).square().sum(-1).mean()


def lattice_tv(values: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Total variation of lattice values ``(m_0, ..., C)``: mean over the lattice of ``sqrt(|D u|^2 + eps^2) - eps``,
    ``D u`` the forward differences along every axis (Charbonnier: smooth at zero, |D u| beyond ``eps``).

    The edge-preserving prior of an image fit, on the footprint lattice (differences over ``1/k`` voxel): it
    prefers piecewise-smooth images with sharp edges among those whose footprint means match the voxels.
    """
    d = values.dim() - 1
    core = [slice(0, max(1, n - 1)) for n in values.shape[:d]]
    total = None
    for axis in range(d):
        if values.shape[axis] < 2:
            continue
        diff = values.narrow(axis, 1, values.shape[axis] - 1) - values.narrow(axis, 0, values.shape[axis] - 1)
        sl = list(core)
        sl[axis] = slice(None)
        term = diff[tuple(sl)].square().sum(-1)
        total = term if total is None else total + term
    if total is None:
        return values.new_zeros(())
    return (torch.sqrt(total + eps * eps) - eps).mean()


def lattice_curvature(values: torch.Tensor) -> torch.Tensor:
    """:func:`smoothness_penalty` on lattice values ``(m_0, ..., C)``: the mean squared second difference along
    every axis (over ``1/k`` voxel on the footprint lattice)."""
    total = values.new_zeros(())
    for axis in range(values.dim() - 1):
        n = values.shape[axis]
        if n < 3:
            continue
        second = values.narrow(axis, 2, n - 2) - 2 * values.narrow(axis, 1, n - 2) + values.narrow(axis, 0, n - 2)
        total = total + second.square().sum(-1).mean()
    return total


def tv_penalty(
    model: torch.nn.Module, n_points: int, voxel: torch.Tensor, generator: torch.Generator, reach: float = 0.5,
    eps: float = 1e-3,
) -> torch.Tensor:
    """:func:`lattice_tv` at random off-grid points (a model without a lattice path): ``mean sqrt(|f(x + v) -
    f(x)|^2 + eps^2) - eps`` with ``x`` uniform in [-1, 1]^d and ``v`` a random direction of ``reach`` voxels."""
    d = voxel.numel()
    x = torch.rand(n_points, d, generator=generator).to(voxel.device) * 2 - 1
    v = torch.randn(n_points, d, generator=generator).to(voxel.device)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) * (voxel * reach)
    f = model(torch.cat([x, x + v])).reshape(2, n_points, -1)
    return (torch.sqrt((f[1] - f[0]).square().sum(-1) + eps * eps) - eps).mean()


def psnr_from_mse(mse: float, peak: float) -> float:
    """``10 log10(peak^2 / mse)`` in dB (inf for a perfect fit)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)
