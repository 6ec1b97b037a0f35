"""Interpolation of a dense lattice at the points of a separable lattice: one axis at a time.

A separable lattice is the product ``axes[0] x axes[1] (x axes[2])`` of per-axis network coordinates: the voxel
centres of an image, or its footprint's sub-voxel points (:func:`medinr.voxels.footprint_axes`). There the
(bi/tri)linear interpolation of a feature lattice factorises into one linear interpolation per axis, which costs
a gather and a ``lerp`` per axis instead of a gather of ``2^d`` corners per point: what makes a full-grid step of a
dense-grid family (``mrgrid``, ``hashgrid`` in 2D, the KAN's grid encoding, ``lattice``) cheap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from medinr.training.blocks import take_block

#: Where the derivative of the interpolant (:func:`interpolate_axes`' ``derivative``) jumps, at a node, a point
#: within this fraction of a cell below the node counts as on it (float32 grid coordinates round to either side).
NODE_TIE = 1e-3

#: A lattice of at most this many vertices along every axis (after the crop to the nodes a tile reaches) is
#: interpolated by dense per-axis matrices (:func:`interpolate_matrices`) rather than gathers: with two taps in
#: rows of tens of entries the products cost less than the gathers and their scatter backward (a 256 x 256 fit's
#: levels onto its 512 x 512 footprint lattice, forward and backward: 32 vertices 2.4 -> 0.8 ms, 81: 2.5 -> 1.7;
#: 203: 3.3 -> 4.7, so the larger levels keep the gathers).
MATRIX_VERTICES = 128


def axis_cells(x: torch.Tensor, vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell index and fractional position of network coordinates ``x (M,)`` on ``vertices`` lattice nodes spread
    over [-1, 1] (``align_corners`` convention; coordinates outside are clamped: border padding)."""
    pos = (x.clamp(-1.0, 1.0) + 1.0) * (0.5 * (vertices - 1))
    cell = pos.detach().floor().clamp(0, max(0, vertices - 2))
    return cell.long(), pos - cell


def axis_matrix(x: torch.Tensor, vertices: int) -> torch.Tensor:
    """``(M, vertices)`` weights of the linear interpolation at network coordinates ``x (M,)`` (as
    :func:`axis_cells`): two non-zeros per row."""
    return _cell_matrix(*axis_cells(x, vertices), vertices)


def _cell_matrix(cell: torch.Tensor, frac: torch.Tensor, vertices: int) -> torch.Tensor:
    """:func:`axis_matrix` from the cells and fractions of :func:`axis_cells`."""
    rows = torch.arange(cell.numel(), device=cell.device)
    weights = torch.zeros(cell.numel(), vertices, dtype=frac.dtype, device=cell.device)
    weights.index_put_((rows, cell), 1.0 - frac, accumulate=True)
    if vertices > 1:
        weights.index_put_((rows, cell + 1), frac, accumulate=True)
    return weights


def interpolate_matrices(values: torch.Tensor, matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """``values (C, n_0, ..., n_{d-1})`` interpolated by one ``(m_a, n_a)`` matrix per axis (:func:`axis_matrix`):
    ``(C, m_0, ...)``.

    The same values as :func:`interpolate_axes` as dense products: where the lattice has tens of nodes per axis
    these cost less than the gathers, and far less than their index-add backward (the registration's fine level,
    a 50 x 59 x 48 velocity lattice onto 83 x 101 x 83 points: 9 ms forward and backward against 35 ms for
    ``F.interpolate`` and a crop).
    """
    for weights in matrices:  # contracting dim 1 each time rotates the axes back into order
        values = torch.tensordot(values, weights, dims=([1], [1]))
    return values


def interpolate_axes(grid: torch.Tensor, axes: Sequence[torch.Tensor], derivative: int | None = None) -> torch.Tensor:
    """Linear interpolation of ``grid (F, r_0, ..., r_{d-1})`` at the separable lattice ``axes``: ``(F, M_0, ...)``.

    Equal to :func:`medinr.geometry.sample_grid` (bilinear, border padding) at every point of
    ``meshgrid(*axes)``; differentiable in ``grid`` (a gather's backward is an index-add).

    ``derivative=a``: the interpolant's partial derivative along axis ``a`` in network units instead, in closed
    form (the difference of the cell's two nodes along ``a``, interpolated along the others; 0 beyond the border,
    where the padding is constant). Where a point lies on a node (within :data:`NODE_TIE` of a cell) the
    derivative is the next cell's (the last cell's at the last node): on the border that is the one-sided
    derivative into the lattice, where autograd through ``grid_sample`` gives 0 (its clamp).
    """
    cells, extents = [], []
    slope = None if derivative is None else 0.5 * (grid.shape[derivative + 1] - 1)
    for axis, x in enumerate(axes):
        vertices = grid.shape[axis + 1]
        x = x.to(device=grid.device, dtype=grid.dtype)
        if vertices == 1:
            if axis == derivative:  # constant along a one-node axis
                return grid.new_zeros(grid.shape[0], *[len(t) for t in axes])
            cells.append((torch.zeros(x.numel(), dtype=torch.long, device=grid.device), None))
            extents.append((0, 1))
            continue
        # a derivative's points within NODE_TIE of a cell from a node take the next cell (on the voxel centres of a
        # grid a node's coordinate rounds to either side of it, and the slope jumps there)
        cell, frac = axis_cells(x + NODE_TIE * 2.0 / (vertices - 1) if axis == derivative else x, vertices)
        # the nodes this lattice reaches along the axis: a tile of a volume reaches a block of the grid, and the
        # gathers along the other axes then copy that block instead of whole planes of the grid (same values).
        # first and top: the first and last cells reached (cell i spans nodes i and i + 1), in one host sync
        first, top = torch.stack(torch.aminmax(cell)).tolist() if cell.numel() else (0, vertices - 2)
        extents.append((first, top + 2 - first))
        cells.append((cell - first if first else cell, frac))
    # a tile's step trains only this block when block updates are on (medinr.training.blocks)
    out = take_block(grid, extents)
    # a derivative is evaluated without gradients, where the gathers win at any size (a 1 mm brain's 99 x 117 x 95
    # velocity nodes onto its voxels: 0.32 against 0.53 s for the three)
    if derivative is None and max(out.shape[1:]) <= MATRIX_VERTICES:
        # a one-vertex axis has no fraction (its gather needs none): weight one on its vertex
        fracs = [out.new_zeros(c.shape) if f is None else f for c, f in cells]
        return interpolate_matrices(out, [_cell_matrix(c, f, n) for (c, _), f, n in zip(cells, fracs, out.shape[1:])])
    for axis in axis_order(out.shape[1:], [len(x) for x in axes]):
        dim = axis + 1
        cell, frac = cells[axis]
        if frac is None:
            out = _take(out, dim, cell)
            continue
        low, high = _take(out, dim, cell), _take(out, dim, cell + 1)
        shape = [1] * out.dim()
        shape[dim] = -1
        if axis == derivative:
            x = axes[axis].to(device=grid.device, dtype=grid.dtype)
            out = (high - low).mul_((((x >= -1.0) & (x <= 1.0)).to(grid.dtype) * slope).reshape(shape))
        else:
            out = torch.lerp(low, high, frac.reshape(shape))
    return out


def _take(values: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``values.index_select(dim, index)``. Along the last (contiguous) dimension it is a ``gather`` of an expanded
    index instead: ``index_select`` picks single elements there at a tenth of the speed (a 4 x 512 x 512 level onto
    512 points, forward and backward: 7.8 ms against 1.0 ms)."""
    if dim != values.dim() - 1 or values.dim() == 1:
        return values.index_select(dim, index)
    return torch.gather(values, dim, index.expand(*values.shape[:-1], index.numel()))


def axis_order(vertices: Sequence[int], points: Sequence[int]) -> tuple[int, ...]:
    """The order in which :func:`interpolate_axes` takes the axes: the one that writes the fewest elements, a
    gather along the last (contiguous) dimension counted twice (it picks single elements; the others copy rows).

    Each axis turns ``vertices[a]`` into ``points[a]``. A full-image step of a 2D fit (coarse grid, fine lattice)
    goes last axis first, so its strided gather runs while the other axis is still coarse (a 256 x 256 fit step
    0.057 -> 0.046 s); a tile or a slab (a lattice smaller than the grid along some axes) shrinks those first.
    Ties go to the order that takes later axes earlier.
    """
    def cost(order: tuple[int, ...]) -> int:
        extents, total = list(vertices), 0
        for axis in order:
            extents[axis] = points[axis]
            total += math.prod(extents) * (2 if axis == len(extents) - 1 else 1)
        return total

    return min(reversed(list(itertools.permutations(range(len(vertices))))), key=cost)


def lattice_points(axes: Sequence[torch.Tensor]) -> torch.Tensor:
    """The points of a separable lattice: ``(M_0, ..., d)``."""
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def channel_first_mlp(mlp: torch.nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """A ReLU MLP (``Linear``/``ReLU`` layers) applied to channel-first ``features (F, M)``: ``(C, M)``.

    No channel-last copy of the features is made (they are the largest tensor of a full-grid step).
    """
    h = features
    for layer in mlp:
        h = h.relu_() if isinstance(layer, torch.nn.ReLU) else torch.addmm(layer.bias[:, None], layer.weight, h)
    return h
