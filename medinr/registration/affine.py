"""The affine stage: a global map of fixed world points into the moving world, fitted before the INR.

The map is ``y = c + s + t + (I + D)(x - c)``: ``c`` is the fixed image's intensity centre of mass, ``s`` the
offset of the moving centre of mass from it (the starting guess), and ``t`` (mm) and ``D`` (unitless) are
what Adam learns. Centring at ``c`` decouples rotation/scale from translation, so one step size fits both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from medinr.geometry import Geometry, sample_grid
from medinr.models.base import lattice_coords
from medinr.models.lattice import resize_lattice
from medinr.registration.losses import ncc
from medinr.registration.svf import lattice_shape, smoothed
from medinr.training.loop import TrainResult, fit


def centre_of_mass(image: np.ndarray, geometry: Geometry, mask: np.ndarray | None = None) -> np.ndarray:
    """Intensity-weighted centre (world mm) of the non-negative part of ``image`` (inside ``mask`` if given)."""
    w = np.clip(np.asarray(image, dtype=np.float64), 0.0, None)
    if mask is not None:
        w = w * (mask > 0)
    total = w.sum()
    if total <= 0:  # nothing bright: the box centre
        return geometry.voxel_to_world((np.asarray(geometry.shape, dtype=np.float64) - 1) / 2.0)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in geometry.shape], indexing="ij")
    ijk = np.array([(g * w).sum() / total for g in grids])
    return np.asarray(geometry.voxel_to_world(ijk), dtype=np.float64)


class AffineMap(nn.Module):
    """The parameters of ``y = c + s + t + (I + D)(x - c)`` on world points mm (see the module docstring), used as
    its matrix (:meth:`homogeneous`)."""

    def __init__(self, centre: np.ndarray, shift: np.ndarray) -> None:
        super().__init__()
        n = len(centre)
        self.register_buffer("centre", torch.as_tensor(np.asarray(centre), dtype=torch.float32))
        self.register_buffer("shift", torch.as_tensor(np.asarray(shift), dtype=torch.float32))
        self.linear = nn.Parameter(torch.zeros(n, n))
        self.translation = nn.Parameter(torch.zeros(n))

    def homogeneous(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The map as a homogeneous ``(ndim + 1, ndim + 1)`` world-mm matrix, differentiable in ``t`` and ``D``."""
        n = self.linear.shape[0]
        a = torch.eye(n, dtype=dtype, device=self.linear.device) + self.linear.to(dtype)
        c = self.centre.to(dtype)
        b = c + self.shift.to(dtype) + self.translation.to(dtype) - a @ c
        last = torch.zeros(1, n + 1, dtype=dtype, device=a.device)
        last[0, n] = 1.0
        return torch.cat([torch.cat([a, b[:, None]], 1), last], 0)

    def matrix(self) -> np.ndarray:
        """The homogeneous ``(ndim + 1, ndim + 1)`` world-mm matrix of the map (float64)."""
        return self.homogeneous(torch.float64).detach().cpu().numpy()


def apply_homogeneous(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``matrix`` (homogeneous, ``(ndim + 1, ndim + 1)``) applied to ``points (..., ndim)``: one GEMM with the
    offset added in it."""
    n = points.shape[-1]
    flat = torch.addmm(matrix[:n, n], points.reshape(-1, n), matrix[:n, :n].T)
    return flat.reshape(points.shape)


def fit_affine(
    similarity: Callable[[int, AffineMap], torch.Tensor],
    centre: np.ndarray,
    shift: np.ndarray,
    steps: int,
    lr: Sequence[float] = (1.0, 0.01),
    progress: bool = False,
) -> tuple[np.ndarray, TrainResult]:
    """Fit the affine map by Adam on ``similarity(step, transform)`` (lower is better).

    Parameters
    ----------
    similarity : callable
        Draws its own points and returns the image dissimilarity of the moving image sampled through
        ``transform`` (an :class:`AffineMap`, world mm to world mm).
    centre, shift : ndarray
        ``c`` and the starting offset ``s`` (mm).
    steps : int
    lr : (float, float)
        Adam step sizes of the translation (mm per step) and of the linear part (per step).

    Returns
    -------
    matrix : ndarray
        ``(ndim + 1, ndim + 1)`` homogeneous fixed->moving world matrix.
    history : TrainResult
    """
    transform = AffineMap(centre, shift)
    groups = [{"params": [transform.translation], "lr": lr[0]}, {"params": [transform.linear], "lr": lr[1]}]
    result = fit(groups, lambda step: similarity(step, transform), steps, lr[1], "cosine", progress=progress,
                 description="affine")
    return transform.matrix(), result


def same_grid(a: Geometry, b: Geometry, tol_mm: float = 1e-3) -> bool:
    """True when two geometries hold the same voxels at the same world places (``tol_mm`` at the corners)."""
    if a.shape != b.shape:
        return False
    return bool(np.allclose(a.affine_nd, b.affine_nd, atol=tol_mm))


def dense_similarity_of(fixed: tuple, moving: tuple, factors: Sequence[float], steps: int, mask=None) -> Callable:
    """The affine stage's loss: global NCC of the fixed image on a coarse lattice of its grid (level k: about
    ``factors[k]`` voxels between nodes, images smoothed by half of that) and the moving image there.

    ``fixed`` and ``moving`` are ``(normalised image, geometry)``; steps are split evenly over the levels.
    """
    (f_img, fg), (m_img, mg) = fixed, moving
    # moving world mm -> moving network coordinates, composed with the affine map once per step: one small GEMM
    # over the points instead of three (the affine stage of a 2 mm pair: 80360 points, 0.5-0.9 ms each and as
    # many in the backward pass)
    to_network = torch.as_tensor(mg.world_to_network_affine, dtype=torch.float32)
    levels = []
    for factor in factors:
        points = lattice_shape(fg.shape, factor)
        sigma = float(factor) / 2.0
        f = resize_lattice(torch.as_tensor(smoothed(f_img, sigma))[None], points)[0]
        keep = f.reshape(-1) > -1.0 if mask is None else resize_lattice(
            torch.as_tensor((mask > 0).astype(np.float32))[None], points)[0].reshape(-1) > 0.5
        world = fg.network_to_world(lattice_coords(points).reshape(-1, fg.ndim).double()).float()[keep]
        m = torch.as_tensor(smoothed(m_img, sigma), dtype=torch.float32)
        levels.append((world, f.reshape(-1)[keep], m))

    def similarity(step: int, transform: AffineMap) -> torch.Tensor:
        world, f, m = levels[min(len(levels) - 1, step * len(levels) // max(steps, 1))]
        coords = apply_homogeneous(to_network @ transform.homogeneous(), world)
        return ncc(f, sample_grid(m, coords, padding_mode="zeros"))

    return similarity
