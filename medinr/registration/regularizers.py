"""Regularisers of the displacement, exact by autograd at sampled world points.

All derivatives are taken with respect to world millimetres, so the penalties do not depend on the
network's coordinate scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def displacement_jacobian(u: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """``du_i/dx_j`` of ``u = f(x)`` at the same points: ``(N, ndim, ndim)`` (dimensionless, mm/mm).

    ``x`` must require grad and ``u`` must have been computed from it point by point.
    """
    rows = []
    for i in range(u.shape[-1]):
        (g,) = torch.autograd.grad(u[..., i].sum(), x, create_graph=create_graph, retain_graph=True)
        rows.append(g)
    return torch.stack(rows, dim=-2)


def deformation_det(grad_u: torch.Tensor) -> torch.Tensor:
    """``det(I + grad u)`` for ``(N, d, d)`` displacement gradients (closed form in 2D and 3D: several times
    faster than a batched LU for millions of small matrices, and differentiable everywhere)."""
    d = grad_u.shape[-1]
    f = grad_u + torch.eye(d, dtype=grad_u.dtype, device=grad_u.device)
    if d not in (2, 3):
        return torch.linalg.det(f)
    # entries by unbind, not by indexing: the backward of 9 indexings writes 9 full-size zero tensors (half the
    # time of an SVF step went there), that of an unbind one stack
    return entry_det([row.unbind(-1) for row in f.unbind(-2)])


def entry_det(e: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Determinant of 2 x 2 or 3 x 3 matrices given entry by entry, ``e[i][k]`` (tensors of one shape)."""
    if len(e) == 2:
        return e[0][0] * e[1][1] - e[0][1] * e[1][0]
    return (e[0][0] * (e[1][1] * e[2][2] - e[1][2] * e[2][1])
            - e[0][1] * (e[1][0] * e[2][2] - e[1][2] * e[2][0])
            + e[0][2] * (e[1][0] * e[2][1] - e[1][1] * e[2][0]))


def jacobian_penalty(grad_u: torch.Tensor) -> torch.Tensor:
    """Mean ``|det(I + grad u) - 1|``: local volume change (IDIR's Jacobian regulariser)."""
    return (deformation_det(grad_u) - 1.0).abs().mean()


def fold_penalty(grad_u: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Mean ``max(0, threshold - det(I + grad u))``: zero wherever the map keeps at least ``threshold`` of the
    local volume, growing linearly towards and past folding (det <= 0).

    Unlike :func:`jacobian_penalty` it does not pull genuine volume changes (two different brains) back to 1.
    """
    return torch.relu(threshold - deformation_det(grad_u)).mean()


def bending_energy(grad_u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean of the squared second derivatives ``sum_ijk (d2 u_i / dx_j dx_k)^2`` in 1/mm^2.

    ``grad_u`` must have been computed with ``create_graph=True``. Costs ``ndim^2`` extra backward
    passes: use it on a subsample of points.
    """
    d = grad_u.shape[-1]
    total = grad_u.new_zeros(())
    for i in range(d):
        for j in range(d):
            (h,) = torch.autograd.grad(grad_u[:, i, j].sum(), x, create_graph=True)
            total = total + h.square().sum(dim=-1).mean()
    return total


def hyperelastic(grad_u: torch.Tensor) -> torch.Tensor:
    """A compressible neo-Hookean-like energy: stretch ``|F|^2 - d`` plus a volume term ``(J - 1)^2 / J``.

    ``F = I + grad u``; the volume term grows without bound as ``J -> 0+`` (``J`` clamped at 1e-3 so that
    folded points give a large finite penalty).
    """
    d = grad_u.shape[-1]
    eye = torch.eye(d, dtype=grad_u.dtype, device=grad_u.device)
    f = eye + grad_u
    det = torch.linalg.det(f)
    stretch = f.square().sum(dim=(-2, -1)) - d
    volume = (det - 1.0).square() / det.clamp_min(1e-3)
    return (stretch + volume).mean()


def regularisation(
    field: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    jacobian: float = 0.0,
    bending: float = 0.0,
    hyper: float = 0.0,
    fold: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the chosen regularisers of ``field`` at world points ``x`` (mm).

    Returns the penalty and the individual (unweighted) terms for logging.
    """
    terms: dict[str, float] = {}
    if jacobian <= 0 and bending <= 0 and hyper <= 0 and fold <= 0:
        return x.new_zeros(()), terms
    x = x.detach().requires_grad_(True)
    grad_u = displacement_jacobian(field(x), x, create_graph=True)
    total = x.new_zeros(())
    if jacobian > 0:
        j = jacobian_penalty(grad_u)
        terms["jacobian"] = float(j.detach())
        total = total + jacobian * j
    if bending > 0:
        b = bending_energy(grad_u, x)
        terms["bending"] = float(b.detach())
        total = total + bending * b
    if fold > 0:
        k = fold_penalty(grad_u)
        terms["fold"] = float(k.detach())
        total = total + fold * k
    if hyper > 0:
        h = hyperelastic(grad_u)
        terms["hyperelastic"] = float(h.detach())
        total = total + hyper * h
    return total, terms
