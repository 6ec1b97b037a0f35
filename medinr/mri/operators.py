"""Composable linear operators in torch with adjoints, and THE SENSE forward model (image -> multi-coil k-space).

A :class:`Linop` is built as ``Linop(oshape, ishape, forward, adjoint)``: SigPy's argument order (output shape
first, as a matrix is rows x columns). It applies itself with ``A(x)``, checks the shape of what goes in and of
what comes out (a wrong shape is a bug in the caller, so it raises ``ValueError``), gives its adjoint as ``A.H``
and composes with ``A @ B`` (apply ``B`` first). Every operator works on whatever device its tensors live on.
:func:`adjoint_mismatch` and :func:`linearity_mismatch` are the checks the tests run on every operator here.

The SENSE model ``M F S`` is written once, in :class:`SenseOp`: the INR loss, the simulation, the baselines'
zero-filled image and data consistency all go through it (:meth:`SenseOp.coil_kspace` is the unmasked part).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from medinr.mri.fft import fftc, ifftc


class Linop:
    """A linear map ``x (ishape) -> y (oshape)`` with an adjoint.

    Parameters
    ----------
    oshape, ishape : sequence of int
        Output and input shapes (SigPy's order).
    forward, adjoint : callables
        The map and its adjoint (with respect to the real inner product ``Re <x, y>``).
    name : str
    """

    def __init__(
        self,
        oshape: Sequence[int],
        ishape: Sequence[int],
        forward: Callable[[torch.Tensor], torch.Tensor],
        adjoint: Callable[[torch.Tensor], torch.Tensor],
        name: str = "Linop",
    ) -> None:
        self.oshape = tuple(int(s) for s in oshape)
        self.ishape = tuple(int(s) for s in ishape)
        self._forward = forward
        self._adjoint = adjoint
        self.name = name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.ishape:
            raise ValueError(f"{self.name} expects input shape {self.ishape}, got {tuple(x.shape)}")
        y = self._forward(x)
        if tuple(y.shape) != self.oshape:
            raise ValueError(f"{self.name} should give shape {self.oshape}, gave {tuple(y.shape)}")
        return y

    @property
    def H(self) -> "Linop":  # noqa: N802 (mathematical notation)
        """The adjoint operator."""
        return Linop(self.ishape, self.oshape, self._adjoint, self._forward, f"{self.name}.H")

    def __matmul__(self, other: "Linop") -> "Linop":
        """Composition ``self @ other``: apply ``other`` first."""
        if other.oshape != self.ishape:
            raise ValueError(f"cannot compose {self.name} {self.ishape} with {other.name} -> {other.oshape}")
        return Linop(
            self.oshape,
            other.ishape,
            lambda x: self._forward(other._forward(x)),
            lambda y: other._adjoint(self._adjoint(y)),
            f"{self.name}*{other.name}",
        )

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.H(self(x))

    def __repr__(self) -> str:
        return f"<{self.name}: {self.ishape} -> {self.oshape}>"


def fft_op(shape: Sequence[int], ndim: int) -> Linop:
    """Centred orthonormal FFT over the last ``ndim`` axes (unitary: its adjoint is its inverse)."""
    return Linop(shape, shape, lambda x: fftc(x, ndim), lambda y: ifftc(y, ndim), f"FFT{ndim}")


def multiply_op(shape: Sequence[int], weights: torch.Tensor) -> Linop:
    """Point-wise multiplication by ``weights`` (broadcast to ``shape``); the adjoint multiplies by the conjugate."""
    shape = tuple(shape)
    conj = weights.conj() if weights.is_complex() else weights
    return Linop(shape, shape, lambda x: x * weights, lambda y: y * conj, "Multiply")


def coil_op(maps: torch.Tensor) -> Linop:
    """Image ``(*grid)`` -> coil images ``(C, *grid)``: multiplication by the sensitivities.

    The adjoint is the coil combination ``sum_c conj(S_c) y_c``.
    """
    grid = tuple(maps.shape[1:])
    conj = maps.conj()
    return Linop(tuple(maps.shape), grid, lambda x: maps * x, lambda y: (conj * y).sum(dim=0), "Coils")


def coil_mix(matrix: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-coil data ``(C, ...)`` mixed across coils: ``y'_c = sum_d W[c, d] y_d`` (``(C', ...)``).

    With ``W`` a noise-whitening matrix (see :mod:`medinr.mri.noise`) the noise of ``W y`` is white and of unit
    variance. The mixing commutes with the FFT and the mask, so a whitened SENSE model is
    ``SenseOp(coil_mix(W, S), mask)``, which equals ``coil_mix(W, SenseOp(S, mask)(x))`` (tested).
    """
    w = matrix.to(device=y.device, dtype=y.dtype)
    return (w @ y.reshape(y.shape[0], -1)).reshape(w.shape[0], *y.shape[1:])


class SenseOp(Linop):
    """SENSE forward model ``A = M F S``: complex image -> masked multi-coil k-space.

    Parameters
    ----------
    maps : complex tensor, shape ``(C, *grid)``
        Coil sensitivities (unit root-sum-of-squares where non-zero for unwhitened data; whitened maps
        ``W S`` otherwise; a single coil of ones is a plain FFT).
    mask : tensor, shape ``grid`` (or broadcastable)
        1 where k-space is acquired, 0 elsewhere.

    Notes
    -----
    ``A.H`` is the zero-filled coil-combined image; ``A.H A`` is the normal operator used by CS and
    conjugate-gradient solvers. The grid is 2D or 3D, taken from the maps.
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor) -> None:
        if not maps.is_complex():
            maps = maps.to(torch.complex64)
        self.maps = maps
        self.ndim = maps.dim() - 1
        self.mask = mask.to(device=maps.device, dtype=maps.real.dtype)
        chain = multiply_op(maps.shape, self.mask) @ fft_op(maps.shape, self.ndim) @ coil_op(maps)
        super().__init__(chain.oshape, chain.ishape, chain._forward, chain._adjoint, "Sense")

    def coil_kspace(self, x: torch.Tensor) -> torch.Tensor:
        """``F S x``: the full (unmasked) multi-coil k-space of image ``x``, differentiable.

        A loss reads its fitting samples and a validation error its held-out samples from this one array.
        """
        return fftc(self.maps * x, self.ndim)

    def with_mask(self, mask: torch.Tensor) -> "SenseOp":
        """The same coils with another sampling mask (e.g. the held-out samples of a split)."""
        return SenseOp(self.maps, mask)

    def data_consistent(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Put the measured samples ``y`` back into the k-space of image ``x`` and coil-combine.

        Inside the support of the (unit-RSS) maps this is ``x + A^H (y - A x)``: acquired samples come from
        the data, the others from ``x``.
        """
        coil_k = self.coil_kspace(x)
        coil_k = coil_k * (1 - self.mask) + y * self.mask
        return (self.maps.conj() * ifftc(coil_k, self.ndim)).sum(dim=0)


def _random_like(shape: Sequence[int], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    real = torch.randn(*shape, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        return torch.complex(real, torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)
    return real.to(dtype)


def adjoint_mismatch(op: Linop, dtype: torch.dtype = torch.complex128, seed: int = 0) -> float:
    """Relative mismatch of the dot-product test ``<A x, y> = <x, A^H y>`` with random ``x``, ``y``.

    Near machine precision (about 1e-15 in complex128) for a correct adjoint.
    """
    g = torch.Generator().manual_seed(seed)
    x, y = _random_like(op.ishape, dtype, g), _random_like(op.oshape, dtype, g)
    lhs = torch.vdot(op(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.H(y).flatten())
    return float(abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300))


def linearity_mismatch(op: Linop, dtype: torch.dtype = torch.complex128, seed: int = 0) -> float:
    """Relative error of ``A(a x + y) = a A x + A y`` (complex ``a``) for the operator and its adjoint."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for f in (op, op.H):
        x, y = _random_like(f.ishape, dtype, g), _random_like(f.ishape, dtype, g)
        a = complex(0.7, -1.3) if dtype.is_complex else 0.7
        lhs, rhs = f(a * x + y), a * f(x) + f(y)
        worst = max(worst, float(torch.linalg.vector_norm(lhs - rhs) / torch.linalg.vector_norm(rhs).clamp_min(1e-300)))
    return worst
