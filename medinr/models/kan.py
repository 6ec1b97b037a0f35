"""Kolmogorov-Arnold networks (Liu et al., 2024): learnable B-spline edge activations, with the paper's
sparsification regulariser, node pruning, grid extension (also as a coarse-to-fine training schedule), and the
"kan" INR family (a KAN behind an encoding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medinr.errors import MedinrError
from medinr.models.base import INR, register_model
from medinr.models.compile import CompiledForward
from medinr.models.config import FamilyConfig, option
from medinr.models.encodings import (
    FourierEncoding,
    FourierEncodingConfig,
    HashEncodingConfig,
    HashGridEncoding,
    coarse_below_fine,
)
from medinr.models.mrgrid import (
    GridEncoding,
    GridEncodingConfig,
    finest_resolution,
    lattice_levels,
    levels_within,
    reconstruction_levels,
)
from medinr.validation import check_options

#: Guards the entropy's logarithm and the normalisation of edge scores against all-zero layers.
_EPS = 1e-8


# --------------------------------------------------------------------------------------------------------------
# B-spline bases
# --------------------------------------------------------------------------------------------------------------


def uniform_knots(
    grid: int,
    order: int,
    grid_range: Sequence[float] = (-1.0, 1.0),
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Knots of a uniform spline grid: ``grid`` intervals over ``grid_range`` extended by ``order`` knots each side.

    Returns
    -------
    Tensor
        ``(grid + 2 * order + 1,)`` increasing knots ``t_i = lo + (i - order) h`` with ``h = (hi - lo) / grid``.
    """
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid
    steps = torch.arange(-order, grid + order + 1, device=device, dtype=torch.float64)
    return (lo + steps * h).to(dtype)


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline basis of degree ``order`` by the Cox-de Boor recursion, vectorised over all basis functions.

    Parameters
    ----------
    x : Tensor
        ``(...)`` evaluation points.
    knots : Tensor
        ``(n_knots,)`` non-decreasing knots (any spacing; see :func:`uniform_knots`).
    order : int
        Polynomial degree ``k`` (3 = cubic).

    Returns
    -------
    Tensor
        ``(..., n_knots - order - 1)``; basis ``i`` is supported on ``[t_i, t_{i+order+1})``. The intervals are
        half-open, so every basis is zero at and beyond the last knot.
    """
    t = knots.to(dtype=x.dtype, device=x.device)
    x = x.unsqueeze(-1)
    basis = ((x >= t[:-1]) & (x < t[1:])).to(x.dtype)
    for p in range(1, order + 1):
        # Repeated knots would give 0/0 here; uniform grids never have them, so the plain division is safe.
        left = (x - t[: -(p + 1)]) / (t[p:-1] - t[: -(p + 1)])
        right = (t[p + 1 :] - x) / (t[p + 1 :] - t[1:-p])
        basis = left * basis[..., :-1] + right * basis[..., 1:]
    return basis


def cubic_basis_uniform(x: torch.Tensor, grid: int, grid_range: Sequence[float] = (-1.0, 1.0)) -> torch.Tensor:
    """Cubic B-spline basis on a uniform grid in closed form; equal to :func:`bspline_basis` with ``order=3``.

    A point in knot interval ``j`` with fractional position ``t`` has four non-zero bases, ``j-3 .. j``, with
    the uniform cubic weights of :func:`cubic_weights`; they are scatter-added into the dense basis, which
    avoids the recursion's element-wise passes over all ``grid + 3`` functions. This is the dense reference
    the KAN layer's fast paths are tested against; it also covers the extended margins (where the layer clamps).

    Parameters
    ----------
    x : Tensor
        ``(...)`` evaluation points.
    grid : int
        Number of intervals ``G`` over ``grid_range``.

    Returns
    -------
    Tensor
        ``(..., grid + 3)``; zero at and beyond the outermost extended knots, like :func:`bspline_basis`.
    """
    order = 3
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid
    n_basis = grid + order
    u = (x - (lo - order * h)) / h  # position in knot intervals from the first (extended) knot
    j = u.detach().floor()
    w = cubic_weights(u - j)
    index = j.long().unsqueeze(-1) + torch.arange(-order, 1, device=x.device)
    # Slots before the first or after the last basis (points near or beyond the extended ends) are dropped by
    # zeroing their weight; scatter_add (not scatter) keeps the clamped duplicates harmless.
    valid = (index >= 0) & (index < n_basis)
    w = w * valid.to(w.dtype)
    out = torch.zeros(*x.shape, n_basis, dtype=x.dtype, device=x.device)
    return out.scatter_add_(-1, index.clamp(0, n_basis - 1), w)


def cubic_basis_cardinal(x: torch.Tensor, grid: int, grid_range: Sequence[float] = (-1.0, 1.0)) -> torch.Tensor:
    """The dense cubic basis of ``x (..., N)`` clamped to ``grid_range``, element by element, points last:
    ``(..., grid + 3, N)`` (the channel-first layout of :func:`kan_points`).

    Basis ``m`` is the cardinal cubic B-spline ``N(u - m + 1)``, ``N(d) = ((2 - |d|)_+^3 - 4 (1 - |d|)_+^3) / 6``,
    at the clamped position ``u`` in knot intervals: equal to :func:`cubic_basis_uniform` of the clamped input
    (to rounding, with the basis axis moved), with no scatter, so that ``torch.compile`` makes it one loop.
    """
    lo, hi = float(grid_range[0]), float(grid_range[1])
    u = ((x - lo) * (grid / (hi - lo))).clamp(0.0, float(grid))
    centres = torch.arange(grid + 3, dtype=x.dtype, device=x.device) - 1.0
    d = (u.unsqueeze(-2) - centres[:, None]).abs()
    a = (2.0 - d).clamp(min=0.0)
    b = (1.0 - d).clamp(min=0.0)
    return (a * a * a - 4.0 * b * b * b) * (1.0 / 6.0)


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """The four non-zero uniform cubic B-spline values at fractional position ``t`` in [0, 1]: ``(..., 4)``.

    ``(1-t)^3/6, (3t^3-6t^2+4)/6, (-3t^3+3t^2+3t+1)/6, t^3/6`` (they sum to one).
    """
    t2 = t * t
    t3 = t2 * t
    s = 1.0 - t
    w0 = s * s * s * (1.0 / 6.0)
    w1 = 0.5 * t3 - t2 + (2.0 / 3.0)
    w3 = t3 * (1.0 / 6.0)
    return torch.stack((w0, w1, 1.0 - w0 - w1 - w3, w3), dim=-1)


def cubic_locate(x: torch.Tensor, grid: int, grid_range: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``x`` (clamped to ``grid_range``) falls on a uniform grid: first non-zero basis and fraction.

    Returns
    -------
    (first, t) : (LongTensor, Tensor), both ``x.shape``
        Bases ``first .. first + 3`` are the non-zero ones (index into the ``grid + 3`` bases), ``t`` in [0, 1]
        the position inside the interval; ``t`` is differentiable in ``x`` (zero slope outside the range).
    """
    lo, hi = float(grid_range[0]), float(grid_range[1])
    u = ((x - lo) * (grid / (hi - lo))).clamp(0.0, float(grid))
    first = u.detach().floor().clamp_(max=grid - 1)
    return first.long(), u - first


def _inside(x: torch.Tensor, grid_range: Sequence[float]) -> torch.Tensor:
    """Where the clamp of :func:`cubic_locate` passes gradients (as ``torch.clamp`` does, bounds included)."""
    return ((x >= grid_range[0]) & (x <= grid_range[1])).to(x.dtype)


def _dense(first: torch.Tensor, weights: torch.Tensor, n_basis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter the four local weights ``(N, n_in, 4)`` into the dense basis ``(N, n_in * n_basis)``; also returns
    the index of the four ``(N, n_in, 4)``."""
    index = first.unsqueeze(-1) + torch.arange(4, device=first.device)
    out = weights.new_zeros(*first.shape, n_basis)
    # in place: the four indices are distinct (no accumulation), and scatter would copy the zeros first
    return out.scatter_(-1, index, weights).flatten(-2), index


#: Slopes of the four :func:`cubic_weights` as quadratics in ``t``: ``dw_k/dt = sum_p CUBIC_SLOPES[k, p] t^p``
#: (``-(1-t)^2/2``, ``3t^2/2 - 2t``, ``-3t^2/2 + t + 1/2``, ``t^2/2``; they sum to zero).
CUBIC_SLOPES = ((-0.5, 1.0, -0.5), (0.0, -2.0, 1.5), (0.5, 1.0, -1.5), (0.0, 0.0, 0.5))


class _CubicSplineLinear(torch.autograd.Function):
    """``basis(x) @ W^T`` for the uniform cubic basis with a hand-written backward.

    Forward builds the dense basis with one scatter of the four local weights and does one GEMM. Backward:
    ``dW = g^T basis`` (one GEMM) and, only when the input needs it, ``dx`` from the four gathered entries of
    ``g W``: weighted by the weights' slopes, they are one small GEMM onto the slope's three polynomial
    coefficients, then a quadratic in ``t`` (a weighted sum over a last axis of four is 3x slower than that
    GEMM on a CPU). That is half the element-wise work of autograd through the basis (measured 1.3-2.2x per
    layer on one CPU thread); the GEMM, and keeping the index from the forward pass, took a 16 -> 16 layer's
    forward and backward on 65536 points from 75 to 55 ms with the commands' two passive threads. Under
    ``create_graph`` the backward rebuilds everything from ``x`` with differentiable operations, so second
    derivatives (registration regularisers) are exact.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, grid: int, lo: float, hi: float) -> torch.Tensor:
        first, t = cubic_locate(x, grid, (lo, hi))
        basis, index = _dense(first, cubic_weights(t), grid + 3)
        # the index is kept (4x the memory of first): rebuilding it in the backward pass costs a pass over it
        ctx.save_for_backward(x, weight, basis, index, t)
        ctx.spline = (grid, lo, hi)
        return basis @ weight.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, basis, index, t = ctx.saved_tensors
        grid, lo, hi = ctx.spline
        if torch.is_grad_enabled():  # create_graph: the saved pieces are detached, rebuild them from x
            first, t = cubic_locate(x, grid, (lo, hi))
            basis, index = _dense(first, cubic_weights(t), grid + 3)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = grad.T @ basis
        if ctx.needs_input_grad[0]:
            n, n_in = x.shape
            local = (grad @ weight).view(n, n_in, grid + 3).gather(-1, index)
            slopes = torch.tensor(CUBIC_SLOPES, dtype=local.dtype, device=local.device)
            q = (local.view(-1, 4) @ slopes).view(n, n_in, 3)  # d/dt of the spline: q0 + q1 t + q2 t^2
            grad_x = (q[..., 0] + t * (q[..., 1] + t * q[..., 2])) * (_inside(x, (lo, hi)) * (grid / (hi - lo)))
        return grad_x, grad_w, None, None, None


# --------------------------------------------------------------------------------------------------------------
# One KAN layer
# --------------------------------------------------------------------------------------------------------------


class KANLayer(nn.Module):
    """A KAN layer: ``y_j = sum_i phi_ji(x_i)`` with ``phi(x) = w_b silu(x) + w_s sum_m c_m B_m(clamp(x))``.

    The B-splines have degree ``order`` on a uniform grid of ``grid`` intervals over ``grid_range`` (extended by
    ``order`` knots each side, so ``grid + order`` basis functions); the spline part sees its input clamped to
    ``grid_range`` (the KAN bounds every layer input to it anyway). Because every edge leaving input ``i``
    combines the same basis of ``x_i``, the forward pass is ``linear(silu(x), W_base)`` plus the spline term.

    Three ways to evaluate the spline term, equal to rounding (tests check values and gradients):

    - ``'dense'``: the dense ``(N, n_in, grid + order)`` basis by autograd, then one GEMM (any order; reference).
    - ``'gather'``: a cubic spline is non-zero on four bases, so each edge gathers its four coefficients at the
      input's knot interval and weights them: ``N * n_in * n_out * 4`` multiply-adds instead of ``(grid + 3)``.
      It also gives every edge's value on the way, so :meth:`edge_activations` uses it.
    - ``'fused'`` (cubic default): the dense basis from one scatter of the four local weights, one GEMM, and a
      hand-written backward (:class:`_CubicSplineLinear`). On a CPU, BLAS on the 36 %-dense basis beats the
      gather, whose ``(N, n_in, 4, n_out)`` rows and scatter-add backward cost ~10x more (measured on one
      thread, 8k points, 64 -> 32 edges); on other devices choose with ``method``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output nodes.
    grid : int
        Spline intervals over ``grid_range`` (default 8).
    order : int
        Spline degree (default 3). Order 3 has the closed-form fast paths; other orders use Cox-de Boor.
    grid_range : (float, float)
        Interval the inputs are expected in.
    noise_scale : float
        Standard deviation of the initial spline coefficients ``c`` (default 0.1).
    closed_form : bool
        Use the closed-form cubic paths when ``order == 3`` (default True); False forces Cox-de Boor.
    method : {'fused', 'gather', 'dense'}
        Evaluation of the spline term in :meth:`forward` (default 'fused'; 'dense' for any non-cubic order).

    Notes
    -----
    Initialisation follows the paper: ``w_s = 1``, ``c ~ N(0, noise_scale^2)``, ``w_b ~ N(0, 2/(n_in+n_out))``.
    """

    METHODS = ("fused", "gather", "dense")

    def __init__(
        self,
        n_in: int,
        n_out: int,
        grid: int = 8,
        order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        noise_scale: float = 0.1,
        closed_form: bool = True,
        method: str = "fused",
    ) -> None:
        super().__init__()
        if grid < 1 or order < 0:
            raise MedinrError(f"a KAN layer needs grid >= 1 and order >= 0, got grid={grid}, order={order}")
        if not float(grid_range[1]) > float(grid_range[0]):
            raise MedinrError(f"the spline range must be increasing, got {tuple(grid_range)}")
        if method not in self.METHODS:
            raise MedinrError(f"unknown KAN layer method '{method}' ({', '.join(self.METHODS)})")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.grid, self.order = int(grid), int(order)
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.closed_form = bool(closed_form)
        self.method = method
        std_b = math.sqrt(2.0 / (self.n_in + self.n_out))
        self.base_weight = nn.Parameter(torch.randn(self.n_out, self.n_in) * std_b)
        self.spline_coef = nn.Parameter(torch.randn(self.n_out, self.n_in, self.n_basis) * noise_scale)
        self.spline_scale = nn.Parameter(torch.ones(self.n_out, self.n_in))
        # Derived from (grid, order, range), all in the config: not stored in checkpoints.
        self.register_buffer("knots", uniform_knots(self.grid, self.order, self.grid_range), persistent=False)

    @property
    def n_basis(self) -> int:
        return self.grid + self.order

    @property
    def cubic(self) -> bool:
        """True when the closed-form cubic paths apply."""
        return self.order == 3 and self.closed_form

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, grid={self.grid}, order={self.order}, range={self.grid_range}"

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """Dense B-spline basis of every input (clamped to the range): ``(..., n_in)`` -> ``(..., n_in, n_basis)``."""
        x = x.clamp(*self.grid_range)
        if self.cubic:
            return cubic_basis_uniform(x, self.grid, self.grid_range)
        return bspline_basis(x, self.knots, self.order)

    def spline_weight(self) -> torch.Tensor:
        """Effective coefficients ``w_s * c``: ``(n_out, n_in, grid + order)``."""
        return self.spline_coef * self.spline_scale.unsqueeze(-1)

    def forward(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """``(..., n_in)`` -> ``(..., n_out)``; ``method`` overrides :attr:`method` (see the class notes)."""
        method = method or self.method
        if not self.cubic:
            method = "dense"
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.n_in)
        out = F.linear(F.silu(flat), self.base_weight)
        if method == "fused":
            spline = _CubicSplineLinear.apply(flat, self.spline_weight().flatten(1), self.grid, *self.grid_range)
        elif method == "gather":
            weights, rows = self._gathered(flat)
            spline = torch.einsum("nik,niko->no", weights, rows)
        else:
            spline = F.linear(self.basis(flat).flatten(-2), self.spline_weight().flatten(1))
        return (out + spline).reshape(*lead, self.n_out)

    def _gathered(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local weights ``(N, n_in, 4)`` and the four gathered coefficient rows ``(N, n_in, 4, n_out)``."""
        first, t = cubic_locate(x, self.grid, self.grid_range)
        table = self.spline_weight().permute(1, 2, 0).reshape(-1, self.n_out)  # (n_in * n_basis, n_out)
        offset = torch.arange(self.n_in, device=x.device).unsqueeze(-1) * self.n_basis
        index = first.unsqueeze(-1) + torch.arange(4, device=x.device) + offset  # (N, n_in, 4)
        return cubic_weights(t), table[index]

    def edge_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Every edge's value ``phi_ji(x_i)``: ``(batch, n_in)`` -> ``(batch, n_out, n_in)``.

        Memory grows as ``batch * n_in * n_out`` (times 4 for the gathered cubic rows): use a subsample of a
        few thousand points.
        """
        base = self.base_weight * F.silu(x).unsqueeze(-2)
        if self.cubic:
            weights, rows = self._gathered(x)
            return base + torch.einsum("nik,niko->noi", weights, rows)
        return base + torch.einsum("bik,oik->boi", self.basis(x), self.spline_weight())

    def edge_l1(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's L1 norm of each activation, ``mean_s |phi_ji(x_s)|``: ``(n_out, n_in)``."""
        return self.edge_activations(x).abs().mean(0)

    @torch.no_grad()
    def select(self, inputs: torch.Tensor | None = None, outputs: torch.Tensor | None = None) -> None:
        """Keep only the given input and output nodes (index tensors), physically shrinking the parameters.

        Any optimiser holding the old parameters must be rebuilt afterwards.
        """

        def keep(p: torch.Tensor) -> torch.Tensor:
            if outputs is not None:
                p = p.index_select(0, outputs.to(p.device))
            if inputs is not None:
                p = p.index_select(1, inputs.to(p.device))
            return p.contiguous()

        for name in ("base_weight", "spline_coef", "spline_scale"):
            old = getattr(self, name)
            setattr(self, name, nn.Parameter(keep(old.data), requires_grad=old.requires_grad))
        self.n_out, self.n_in = self.base_weight.shape

    @torch.no_grad()
    def extend_grid(self, new_grid: int, samples_per_basis: int = 32) -> float:
        """Refit the spline coefficients on a grid of ``new_grid`` intervals so that every phi is unchanged.

        The unscaled spline ``sum_m c_m B_m(x)`` of each edge is fitted by least squares to the new basis on
        uniform samples of ``grid_range`` (the spline part sees its input clamped to it); ``w_s`` and ``w_b``
        are kept. Fitting the unscaled spline matters: fitting ``w_s * spline`` and keeping ``w_s`` would apply
        the scale twice. When ``new_grid`` is a multiple of ``grid`` the old spline lies in the new spline space
        and the refit is exact to rounding.

        Returns
        -------
        float
            Largest absolute change of any unscaled spline on the samples (a check of the refit).
        """
        if new_grid < 1:
            raise MedinrError(f"the new grid must have at least 1 interval, got {new_grid}")
        device = self.spline_coef.device
        # Knots straight from their definition in float64 (a float32 buffer cast up is off by ~1e-8).
        old_knots = uniform_knots(self.grid, self.order, self.grid_range, device=device, dtype=torch.float64)
        new_knots = uniform_knots(new_grid, self.order, self.grid_range, device=device, dtype=torch.float64)
        n = max(512, samples_per_basis * (new_grid + self.order))
        xs = torch.linspace(*self.grid_range, n, device=device, dtype=torch.float64)
        old_basis = bspline_basis(xs, old_knots, self.order)  # (n, n_basis)
        new_basis = bspline_basis(xs, new_knots, self.order)  # (n, n_basis')
        coef = self.spline_coef.detach().to(torch.float64).reshape(-1, self.n_basis)  # (out*in, n_basis)
        target = old_basis @ coef.T  # (n, out*in)
        # Solve on the CPU in float64: small (n x n_basis') systems, and lstsq is not on every device backend.
        new_coef = torch.linalg.lstsq(new_basis.cpu(), target.cpu(), driver="gelsd").solution.to(device)
        error = float((new_basis @ new_coef - target).abs().max()) if target.numel() else 0.0
        shape = (self.n_out, self.n_in, new_grid + self.order)
        self.spline_coef = nn.Parameter(
            new_coef.T.reshape(shape).to(self.spline_scale.dtype).contiguous(),
            requires_grad=self.spline_coef.requires_grad,
        )
        self.grid = int(new_grid)
        self.knots = new_knots.to(self.knots.dtype)
        return error


# --------------------------------------------------------------------------------------------------------------
# A compiled training pass over many points
# --------------------------------------------------------------------------------------------------------------

#: Points per call of the compiled pass (:func:`kan_points`): a chunk's dense basis (16 inputs x 11 bases x 8192
#: points, 5.8 MB) stays in cache. Forward and backward of the reconstruction's KAN ([16, 16, 2] behind its grid
#: encoding) on a 256 x 256 lattice, one thread, allocator as the commands set it: 96-108 ms in chunks of 8192
#: (113 in 4096, 105 in 16384; 115 with the points as rows), 170-190 eager (the fused layers); ``mrgrid`` 16 ms.
LATTICE_CHUNK = 8192
#: Training passes over at least this many lattice points may take the compiled path (a 128 x 128 image: 41-48 ms
#: eager, 23-26 compiled; 160 x 160: 65-73 and 42-48).
COMPILED_LATTICE_MIN = 2 * LATTICE_CHUNK
#: Eager work (lattice points x passes, over such lattices) after which a model's passes compile, unless a model
#: of the same layers already compiled in this process. The first compiled call costs 2-4 s (17 s with a cold
#: inductor cache) and saves about 1.1 us per point and pass on one thread, so a fit must show that it is long
#: first: a registration's KAN velocity made 47 passes over 20-30k nodes (compiling made its command 4.5 -> 8.6 s),
#: a 256 x 256 reconstruction makes hundreds of passes of 65536 points (it compiles after 46).
COMPILE_AFTER_WORK = 3_000_000
#: Layer signatures (inputs, outputs, grid, range of every layer; device) compiled in this process.
_COMPILED_SIGNATURES: set[tuple] = set()


def kan_points(feats: torch.Tensor, params: Sequence[torch.Tensor], grids: tuple[int, ...],
               ranges: tuple[tuple[float, float], ...]) -> torch.Tensor:
    """The KAN's layers on a feature table's raw output, channel first: ``feats (n_encoded, N)`` -> ``(C, N)``.

    Plain tensor operations, for ``torch.compile``: ``tanh`` first (as :meth:`KAN.kan_input`), then each cubic
    layer as :meth:`KANLayer.forward` with the element-wise basis (:func:`cubic_basis_cardinal`) and ``tanh``
    between layers. Channel first, every element-wise pass runs along the points, contiguous in memory.
    ``params`` holds every layer's ``base_weight, spline_coef, spline_scale`` in turn; ``grids`` and ``ranges``
    their spline intervals and ranges.
    """
    x = torch.tanh(feats)
    for k, grid in enumerate(grids):
        base, coef, scale = params[3 * k: 3 * k + 3]
        basis = cubic_basis_cardinal(x, grid, ranges[k]).flatten(0, 1)
        x = base @ F.silu(x) + (coef * scale.unsqueeze(-1)).flatten(1) @ basis
        if k < len(grids) - 1:
            x = torch.tanh(x)
    return x


_POINTS_PASS: CompiledForward | None = None


def _compiled_points() -> CompiledForward:
    """:func:`kan_points` through ``torch.compile`` (one per process; eager if compiling fails)."""
    global _POINTS_PASS
    if _POINTS_PASS is None:
        _POINTS_PASS = CompiledForward(kan_points, dynamic=False)
    return _POINTS_PASS


def layer_regularization(l1: torch.Tensor, mu_1: float, mu_2: float) -> torch.Tensor:
    """``mu_1 |Phi|_1 + mu_2 S(Phi)`` of one layer from its edge L1 norms ``(n_out, n_in)``.

    ``|Phi|_1`` is the sum of the edge L1 norms; the entropy is ``S = -sum p log p`` with ``p = |phi|_1 / |Phi|_1``.
    """
    total = l1.sum()
    p = l1 / (total + _EPS)
    entropy = -(p * torch.log(p + _EPS)).sum()
    return mu_1 * total + mu_2 * entropy


# --------------------------------------------------------------------------------------------------------------
# The INR family
# --------------------------------------------------------------------------------------------------------------

_FOURIER_DEFAULTS: dict[str, Any] = {"n_frequencies": 32, "sigma": 2.0, "seed": 0}
_HASH_DEFAULTS: dict[str, Any] = {
    "levels": 8,
    "features_per_level": 2,
    "log2_table_size": 17,
    "base_resolution": 8,
    "max_resolution": 256,
}
_GRID_DEFAULTS: dict[str, Any] = {"levels": 4, "features_per_level": 4, "base_resolution": 32, "max_resolution": 256}
_ENCODINGS = (None, "none", "fourier", "hashgrid", "grid")
#: Encodings with trainable feature tables (10x learning rate, tanh-bounded features, resolution per image).
_TABLES = ("hashgrid", "grid")


def _encoding(encoding: str | None, in_features: int, options: dict[str, Any] | None) -> tuple[Any, dict]:
    """The encoding module (None for raw coordinates) and its resolved options."""
    if encoding not in _ENCODINGS:
        raise MedinrError(f"unknown KAN encoding '{encoding}' (fourier, hashgrid, grid or none)")
    opts = dict(options or {})
    if encoding == "fourier":
        opts = {**_FOURIER_DEFAULTS, **opts}
        return FourierEncoding(in_features, **opts), opts
    if encoding == "hashgrid":
        opts = {**_HASH_DEFAULTS, **opts}
        return HashGridEncoding(in_features, **opts), opts
    if encoding == "grid":
        # a 256^3 default lattice would be 268 M parameters: volumes default to 64^3 (fit_image sets the grid's)
        opts = {**_GRID_DEFAULTS, **({"max_resolution": 64} if in_features == 3 else {}), **opts}
        return GridEncoding(in_features, **opts), opts
    if opts:
        raise MedinrError("encoding_options given but encoding is none")
    return None, opts


def _schedule(schedule: Sequence[Sequence[float]] | None) -> list[list[float]]:
    """``[[fraction, grid], ...]`` sorted by fraction, checked."""
    out = []
    for item in schedule or ():
        if len(item) != 2 or not 0.0 <= float(item[0]) < 1.0 or int(item[1]) < 1:
            raise MedinrError(f"grid_schedule entries are [fraction in [0, 1), grid >= 1], got {list(item)}")
        out.append([float(item[0]), int(item[1])])
    return sorted(out)


#: The typed config of each encoding's ``encoding_options``.
ENCODING_CONFIGS: dict[str, type[FamilyConfig]] = {
    "fourier": FourierEncodingConfig, "hashgrid": HashEncodingConfig, "grid": GridEncodingConfig,
}
#: The KAN's own defaults of each encoding's options (lighter than the encodings' own).
ENCODING_DEFAULTS = {"fourier": _FOURIER_DEFAULTS, "hashgrid": _HASH_DEFAULTS, "grid": _GRID_DEFAULTS}


@dataclass(frozen=True)
class KANConfig(FamilyConfig):
    """The ``kan`` family's options and its defaults per task."""

    widths: list[int] = option([16], 1, 1 << 16, units="nodes", doc="hidden widths: [n_encoded, *widths, out]")
    grid: int = option(8, 1, 1024, units="intervals", doc="spline intervals of every activation over [-1, 1]")
    order: int = option(3, 0, 16, doc="spline degree (3: the fast closed-form paths)")
    encoding: str | None = option("grid", choices=("fourier", "hashgrid", "grid", "none"),
                                  doc="input encoding in front of the KAN (none or null: raw coordinates)")
    encoding_options: dict[str, Any] | None = option(None, doc="options of the encoding (its own typed config)")
    noise_scale: float = option(0.1, 0, 100, doc="standard deviation of the initial spline coefficients")
    reg_lambda: float = option(0.0, 0, 1e6, doc="weight of the sparsification regulariser (0: off)")
    reg_mu1: float = option(1.0, 0, 1e6, doc="weight of the L1 part of the regulariser")
    reg_mu2: float = option(1.0, 0, 1e6, doc="weight of the entropy part of the regulariser")
    reg_samples: int = option(1024, 1, 1 << 24, units="points", doc="points of a batch the regulariser uses")
    grid_schedule: list[list[float]] | None = option(
        None, doc="grid extension as a schedule: [[fraction of the steps, new grid], ...]")
    method: str = option("fused", choices=KANLayer.METHODS, doc="spline evaluation path of every layer")

    RATES: ClassVar[dict[str, float]] = {
        # 2x zoom over cubic interpolation, six whole slices of bench/models.py (median / worst) and its 48^3 crop
        # of the MNI volume: 1e-3 gave +0.71 / +0.32 dB and +0.81 dB; 3e-3 gave +0.59 / +0.16 and +0.27 (it stopped
        # early on a held-out plateau; 2e-3 +0.53 / +0.10). A larger first feature scale (1e-2, 0.1) did no better.
        "image": 1e-3,
        "reconstruction": 3e-3,
        "deformation": 3e-3,
    }
    SMOOTHNESS: ClassVar[float] = 1e-2
    PRIOR: ClassVar[str] = "tv"

    @classmethod
    def check_values(cls, values: Mapping[str, Any], prefix: str = "") -> None:
        """``encoding_options`` are checked against the chosen encoding's config (over the KAN's defaults); a grid
        schedule may not ask for more spline intervals than ``grid`` allows (the checkpoint would be refused)."""
        most = cls.specs()["grid"].high
        for item in values["grid_schedule"] or ():
            if len(item) == 2 and item[1] > most:
                raise MedinrError(f"model option '{prefix}grid_schedule' asks for a grid of {item[1]:g} intervals "
                                  f"(at most {most:g})")
        encoding, options = values["encoding"], values["encoding_options"]
        if encoding in (None, "none"):
            if options:
                raise MedinrError(f"model option '{prefix}encoding_options' is given but the encoding is none")
            return
        check_options(ENCODING_CONFIGS[encoding], {**ENCODING_DEFAULTS[encoding], **(options or {})},
                      f"the KAN's {encoding} encoding", prefix=f"{prefix}encoding_options.")

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: a feature-table encoding's finest level follows the grid (as the grid families). Reconstruction:
        the grid encoding's levels are ``mrgrid``'s (:func:`~medinr.models.mrgrid.reconstruction_levels`). Other
        tasks: the constructor's defaults."""
        encoding = options.get("encoding", cls.specs()["encoding"].default)
        if task == "reconstruction" and encoding == "grid":
            return {"encoding_options": reconstruction_levels(shape)}
        if task != "image" or encoding not in _TABLES:
            return {}
        finest = finest_resolution(shape) if encoding == "grid" else 2 * max(shape)
        given = options.get("encoding_options")
        given = given if isinstance(given, dict) else {}
        coarse = coarse_below_fine(given, given.get("max_resolution", finest), _HASH_DEFAULTS["base_resolution"]) \
            if encoding == "hashgrid" else {}
        return {"encoding_options": {"max_resolution": finest, **coarse}}


@register_model("kan")
class KAN(INR):
    """A KAN on (optionally encoded) coordinates: ``encoding -> bound -> KANLayer -> tanh -> ... -> KANLayer``.

    Plain B-spline KANs on raw coordinates are low-pass (a few spline intervals per axis), so the default puts
    an encoding in front; Fourier features, a hash grid or raw coordinates (``encoding=None``) are the choices.

    How inputs are kept inside the spline range [-1, 1]: Fourier features are cosines and sines, already in it;
    raw coordinates are clamped to it; hash-grid features and every hidden layer's outputs pass through
    ``tanh``. So each phi is a function on [-1, 1], which is what the plots show and what grid extension
    refits. No normalisation layer is used (a LayerNorm over 2-3 raw coordinates would destroy them).

    A long fit's training passes over a large lattice (a reconstruction's image, an image fit's footprint lattice:
    at least :data:`COMPILED_LATTICE_MIN` points, gradients on, after :data:`COMPILE_AFTER_WORK` of eager work)
    run the layers through ``torch.compile`` in chunks (:func:`kan_points`, 1.5-1.8x faster than the eager layers
    on a CPU; eager if compiling fails; see :attr:`compile_lattice`). Rendering, smaller lattices and points run
    the eager layers.

    Parameters
    ----------
    in_features, out_features : int
    widths : list of int
        Hidden widths (default ``[16]``); the KAN is ``[n_encoded, *widths, out_features]``.
        Pruning shrinks them in :attr:`config`.
    grid : int
        Spline intervals per activation (default 8); grid extension raises it in :attr:`config`.
    order : int
        Spline degree (default 3; the fast closed-form paths apply to 3).
    encoding : {'grid', 'fourier', 'hashgrid', 'none', None}
        Input encoding (default 'grid'; ``'none'`` or None: raw coordinates).
    encoding_options : dict, optional
        Options of :class:`~medinr.models.mrgrid.GridEncoding` (default 4 levels x 4 features, resolutions
        32..256; an image fit sets the finest from the image), :class:`~medinr.models.encodings.FourierEncoding`
        (default ``n_frequencies=32, sigma=2, seed=0``) or :class:`~medinr.models.encodings.HashGridEncoding`
        (default 8 levels x 2 features, table 2^17, resolutions 8..256). The resolved options are stored in
        :attr:`config`.
    noise_scale : float
        Initial spline coefficient standard deviation (default 0.1).
    reg_lambda, reg_mu1, reg_mu2 : float
        Sparsification regulariser ``lambda (mu_1 sum_l |Phi_l|_1 + mu_2 sum_l S(Phi_l))`` returned by
        :meth:`regularization` (default lambda 0: off, no cost; mu_1 = mu_2 = 1 as in the paper).
    reg_samples : int
        Points of each training batch used for the regulariser's per-edge values (default 1024).
    grid_schedule : list of [fraction, grid], optional
        The paper's grid extension as a training schedule: when a fit (:meth:`training_progress`) passes
        ``fraction`` of its steps, every layer's splines are refitted on ``grid`` intervals (a coarse-to-fine
        prior: start with a small ``grid``). Extending to a multiple of the current grid leaves the function
        unchanged.
    method : {'fused', 'gather', 'dense'}
        Spline evaluation of every layer (see :class:`KANLayer`; default 'fused').

    Notes
    -----
    Regulariser use: in training mode with ``reg_lambda > 0``, each forward pass records the first
    ``reg_samples`` rows of every layer's input; ``loss = data_loss + model.regularization()`` then adds the
    penalty for that batch (this is what :func:`medinr.image_fit.fit_image` does). Outside such a loop, use
    :meth:`regularization_loss` on explicit coordinates. After :meth:`prune` or :meth:`extend_grid` the
    parameters are new tensors: rebuild the optimiser (:func:`medinr.fit.fit` does when
    :meth:`training_progress` says so).
    """

    config_type = KANConfig
    block_updates = True  # its grid encoding's levels (a hash table is not a block)
    #: Training passes over large lattices: ``'auto'`` compiles them after :data:`COMPILE_AFTER_WORK` of eager
    #: work (:meth:`_compiles`), True from the first, False never.
    compile_lattice: bool | str = "auto"

    @property
    def separable(self) -> bool:  # type: ignore[override]
        """A feature-table encoding (grid, hashgrid) has a per-axis lattice path; the KAN layers act per point."""
        return self.encoding_name in _TABLES

    def __init__(
        self,
        in_features: int,
        out_features: int,
        widths: Sequence[int] = (16,),
        grid: int = 8,
        order: int = 3,
        encoding: str | None = "grid",
        encoding_options: dict[str, Any] | None = None,
        noise_scale: float = 0.1,
        reg_lambda: float = 0.0,
        reg_mu1: float = 1.0,
        reg_mu2: float = 1.0,
        reg_samples: int = 1024,
        grid_schedule: Sequence[Sequence[float]] | None = None,
        method: str = "fused",
    ) -> None:
        widths = [int(w) for w in widths]
        if any(w < 1 for w in widths):
            raise MedinrError(f"KAN hidden widths must be positive, got {widths}")
        encoding = None if encoding == "none" else encoding
        module, enc_opts = _encoding(encoding, in_features, encoding_options)
        schedule = _schedule(grid_schedule)
        super().__init__(in_features, out_features)
        self.resolve_config(
            widths=widths, grid=int(grid), order=int(order), encoding=encoding, encoding_options=enc_opts,
            grid_schedule=schedule,
        )
        self.encoding_name = encoding
        self.encoding: nn.Module | None = module
        n_enc = module.out_features if module is not None else in_features
        sizes = [n_enc, *widths, out_features]
        self.layers = nn.ModuleList(
            KANLayer(a, b, grid=grid, order=order, noise_scale=noise_scale, method=method)
            for a, b in zip(sizes[:-1], sizes[1:])
        )
        self._reg_inputs: list[torch.Tensor] | None = None
        self._eager_work = 0  # lattice points x passes run eagerly that could have compiled (see _compiles)

    # ---- forward ----------------------------------------------------------------------------------------------

    def kan_input(self, coords: torch.Tensor) -> torch.Tensor:
        """Encoded, range-bounded input of the first KAN layer."""
        if self.encoding_name == "fourier":
            return self.encoding(coords)  # cos/sin: in [-1, 1] already
        if self.encoding_name in _TABLES:
            return torch.tanh(self.encoding(coords))
        return coords.clamp(-1.0, 1.0)

    def layer_inputs(self, coords: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inputs of every KAN layer (bounded) and the output, for ``coords`` of shape ``(N, in_features)``."""
        return self.layer_inputs_encoded(self.kan_input(coords))

    def layer_inputs_encoded(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`layer_inputs` from the bounded encoding ``x (N, n_encoded)``."""
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return inputs, x

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        inputs, out = self.layer_inputs(coords.reshape(-1, coords.shape[-1]))
        self._record_for_regularizer(inputs)
        return out.reshape(*lead, self.out_features)

    def _record_for_regularizer(self, inputs: list[torch.Tensor]) -> None:
        if self.training and self.config["reg_lambda"] > 0 and torch.is_grad_enabled():
            self._reg_inputs = [x[: self.config["reg_samples"]] for x in inputs]

    def forward_axes(self, axes: Sequence[torch.Tensor], active_levels: int | None = None) -> torch.Tensor:
        """The output on the separable lattice ``axes``: ``(M_0, ..., C)``; a feature-table encoding is evaluated
        one axis at a time, the KAN layers on its (point-major) output. Levels of a dense grid encoding beyond
        the ``active_levels`` coarsest give zero features."""
        if self.encoding_name not in _TABLES:
            return super().forward_axes(axes)
        if self.encoding_name == "grid":
            return self._layers_on_lattice(self.encoding.forward_axes(axes, active_levels))
        return self._layers_on_lattice(self.encoding.forward_axes(axes))

    def _layers_on_lattice(self, feats: torch.Tensor) -> torch.Tensor:
        """The KAN layers on channel-first encoded features ``(F, M_0, ...)``: ``(M_0, ..., C)``."""
        channels = feats.reshape(feats.shape[0], -1)
        if self._compiles(channels.shape[1], count=True):
            out = self._compiled_lattice(channels)
        else:
            inputs, out = self.layer_inputs_encoded(torch.tanh(channels.T))
            self._record_for_regularizer(inputs)
        return out.reshape(*feats.shape[1:], self.out_features)

    def _compiles(self, points: int, count: bool = False) -> bool:
        """Whether a pass over ``points`` lattice points takes the compiled path: a training pass (gradients on,
        no regulariser record wanted) over :data:`COMPILED_LATTICE_MIN` points or more, through cubic layers of
        the default method, while compiling has not failed in this process (then the eager layers, faster than
        :func:`kan_points` run eagerly); with ``'auto'``, once this model has done :data:`COMPILE_AFTER_WORK` of
        such passes eagerly or its layers compiled before. ``count``: an eager pass counts towards that work."""
        failed = _POINTS_PASS is not None and not _POINTS_PASS.compiled  # (creating it imports dynamo: 2-3 s)
        if not (self.compile_lattice and points >= COMPILED_LATTICE_MIN and torch.is_grad_enabled()
                and all(layer.cubic and layer.method == "fused" for layer in self.layers)
                and not (self.training and self.config["reg_lambda"] > 0) and not failed):
            return False
        if self.compile_lattice is True or self._signature() in _COMPILED_SIGNATURES:
            return True
        if self._eager_work >= COMPILE_AFTER_WORK:
            return True
        self._eager_work += points if count else 0
        return False

    def _signature(self) -> tuple:
        return (*((layer.n_in, layer.n_out, layer.grid, layer.grid_range) for layer in self.layers),
                str(self.layers[0].base_weight.device))

    def _compiled_lattice(self, channels: torch.Tensor) -> torch.Tensor:
        """The KAN layers on raw channel-first features ``(n_encoded, N)``: ``(N, C)``, in chunks of
        :data:`LATTICE_CHUNK` points through the compiled :func:`kan_points`; the short last chunk runs eagerly
        (its shape would compile again)."""
        run = _compiled_points()
        params = [p for layer in self.layers for p in (layer.base_weight, layer.spline_coef, layer.spline_scale)]
        grids = tuple(layer.grid for layer in self.layers)
        ranges = tuple(layer.grid_range for layer in self.layers)
        points = channels.shape[1]
        whole = points - points % LATTICE_CHUNK
        # contiguous chunks: a view's strides follow the lattice's size, and each new stride would compile again
        parts = [run(channels[:, s: s + LATTICE_CHUNK].contiguous(), params, grids, ranges).T
                 for s in range(0, whole, LATTICE_CHUNK)]
        if whole < points:
            parts.append(self.layer_inputs_encoded(torch.tanh(channels[:, whole:].T))[1])
        if run.compiled:
            _COMPILED_SIGNATURES.add(self._signature())
        return torch.cat(parts)

    def forward_lattice(self, shape: Sequence[int], active_levels: int | None = None) -> torch.Tensor:
        """The output on the full lattice ``shape`` (``linspace(-1, 1, n)`` per axis): ``(*shape, C)``.

        A dense grid encoding is resampled onto the lattice as a whole (:meth:`GridEncoding.forward_lattice`), the
        KAN layers run on its points: equal to :meth:`forward` at the lattice points. A registration's velocity
        on 23 x 28 x 22 nodes (model zoo defaults): forward and backward 28 -> 22 ms. Levels of the grid encoding
        beyond the ``active_levels`` coarsest give zero features (coarse to fine, as ``mrgrid``).
        """
        if self.encoding_name != "grid":
            return super().forward_lattice(shape, active_levels)
        feats = lattice_levels(self.encoding.grids, shape, active_levels)
        return self._layers_on_lattice(torch.cat(feats, dim=0))

    @property
    def capacity_levels(self) -> int:
        """The grid encoding's levels (switched on coarsest first by a coarse-to-fine schedule); 1 otherwise."""
        return len(self.encoding.grids) if self.encoding_name == "grid" else 1

    def levels_within(self, nodes: int) -> int:
        return levels_within(self.encoding.resolutions, nodes) if self.encoding_name == "grid" else 1

    def zero_output_(self) -> None:
        # phi = w_b silu(x) + w_s spline(x): zero w_b and the coefficients (not w_s, whose gradient would vanish)
        last = self.layers[-1]
        with torch.no_grad():
            last.base_weight.zero_()
            last.spline_coef.zero_()

    def param_groups(self, base_lr: float) -> list[dict]:
        """Adam groups: feature tables (hash or dense grid) at 10x the base rate, as instant-NGP wants; the KAN
        at ``base_lr``."""
        groups = [{"params": list(self.layers.parameters()), "lr": base_lr}]
        if self.encoding_name in _TABLES:
            groups.append({"params": list(self.encoding.parameters()), "lr": 10.0 * base_lr})
        return groups

    def training_progress(self, fraction: float) -> bool:
        """Grid extension on schedule: refit the splines on the largest scheduled grid due by ``fraction``.

        Returns True when the parameters were replaced (the fitting loop rebuilds its optimiser).
        """
        due = [g for f, g in self.config["grid_schedule"] if f <= fraction]
        if not due or max(due) <= self.config["grid"]:
            return False
        self.extend_grid(max(due))
        return True

    # ---- sparsification ---------------------------------------------------------------------------------------

    def _penalty(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        total = sum(
            layer_regularization(layer.edge_l1(x), cfg["reg_mu1"], cfg["reg_mu2"])
            for layer, x in zip(self.layers, inputs)
        )
        return cfg["reg_lambda"] * total

    def regularization(self) -> torch.Tensor | None:
        """The sparsification penalty of the last training batch, or None when ``reg_lambda`` is 0.

        Uses the layer inputs that the last training-mode forward pass recorded (its first ``reg_samples``
        points), so gradients reach every layer and the encoding; the record is consumed.
        """
        if self.config["reg_lambda"] <= 0 or self._reg_inputs is None:
            return None
        inputs, self._reg_inputs = self._reg_inputs, None
        return self._penalty(inputs)

    def regularization_loss(self, coords: torch.Tensor) -> torch.Tensor:
        """The sparsification penalty evaluated on ``coords`` ``(N, in_features)`` (a few thousand points).

        Uses ``reg_lambda, reg_mu1, reg_mu2`` from the config; with ``reg_lambda = 0`` it is zero.
        """
        inputs, _ = self.layer_inputs(coords.reshape(-1, coords.shape[-1]))
        return self._penalty(inputs)

    @torch.no_grad()
    def edge_scores(self, coords: torch.Tensor) -> list[torch.Tensor]:
        """L1 norm ``mean |phi_ji|`` of every edge on ``coords``: one ``(n_out, n_in)`` tensor per layer."""
        inputs, _ = self.layer_inputs(coords.reshape(-1, coords.shape[-1]))
        return [layer.edge_l1(x) for layer, x in zip(self.layers, inputs)]

    @torch.no_grad()
    def prune(self, coords: torch.Tensor, threshold: float = 1e-2) -> list[int]:
        """Remove hidden nodes whose incoming or outgoing activations are all weak (the paper's rule).

        Node ``i`` of hidden layer ``l`` is kept iff ``max_j |phi_ij|_1 > threshold`` over its incoming edges and
        ``max_m |phi_mi|_1 > threshold`` over its outgoing ones, with the L1 norms measured on ``coords``. The
        layers are physically shrunk and ``config['widths']`` updated, so ``build_model('kan', **config)``
        rebuilds the pruned shape. A layer keeps at least its strongest node. Rebuild the optimiser afterwards.

        Returns
        -------
        list of int
            The new hidden widths.
        """
        scores = self.edge_scores(coords)
        widths = []
        for k in range(len(self.layers) - 1):
            incoming = scores[k].amax(dim=1)  # (n_hidden,) over the node's input edges
            outgoing = scores[k + 1].amax(dim=0)
            keep = (incoming > threshold) & (outgoing > threshold)
            if not bool(keep.any()):
                keep[torch.argmax(torch.minimum(incoming, outgoing))] = True
            idx = torch.nonzero(keep).flatten()
            self.layers[k].select(outputs=idx)
            self.layers[k + 1].select(inputs=idx)
            # The next layer's scores lose the pruned inputs too, so its own node test stays aligned.
            scores[k + 1] = scores[k + 1].index_select(1, idx)
            widths.append(int(idx.numel()))
        self.config["widths"] = widths
        self._reg_inputs = None
        return widths

    def extend_grid(self, new_grid: int) -> float:
        """Refit every layer's splines on ``new_grid`` intervals without changing the function.

        Returns the largest change of any unscaled spline on the refit samples (0 up to rounding when
        ``new_grid`` is a multiple of the current grid). Updates ``config['grid']``; rebuild the optimiser.
        """
        error = max(layer.extend_grid(int(new_grid)) for layer in self.layers)
        self.config["grid"] = int(new_grid)
        self._reg_inputs = None
        return error
