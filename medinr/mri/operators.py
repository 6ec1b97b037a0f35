"""Composable linear operators in torch with adjoints, and the SENSE operator image -> masked multi-coil k-space.

A :class:`Linop` knows its input and output shapes, applies itself with ``A(x)``, gives its adjoint as
``A.H`` and composes with ``A @ B`` (apply ``B`` first). Every operator works on whatever device its
tensors live on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from medinr.mri.fft import fftc, ifftc


class Linop:
    """A linear map ``x (ishape) -> y (oshape)`` with an adjoint.

    Parameters
    ----------
    ishape, oshape : sequence of int
    forward, adjoint : callables
        The map and its adjoint (with respect to the real inner product ``Re <x, y>``).
    name : str
    """

    def __init__(
        self,
        ishape: Sequence[int],
        oshape: Sequence[int],
        forward: Callable[[torch.Tensor], torch.Tensor],
        adjoint: Callable[[torch.Tensor], torch.Tensor],
        name: str = "Linop",
    ) -> None:
        self.ishape = tuple(int(s) for s in ishape)
        self.oshape = tuple(int(s) for s in oshape)
        self._forward = forward
        self._adjoint = adjoint
        self.name = name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.ishape:
            raise ValueError(f"{self.name} expects shape {self.ishape}, got {tuple(x.shape)}")
        return self._forward(x)

    @property
    def H(self) -> "Linop":  # noqa: N802 (mathematical notation)
        """The adjoint operator."""
        return Linop(self.oshape, self.ishape, self._adjoint, self._forward, f"{self.name}.H")

    def __matmul__(self, other: "Linop") -> "Linop":
        """Composition ``self @ other``: apply ``other`` first."""
        if other.oshape != self.ishape:
            raise ValueError(f"cannot compose {self.name} {self.ishape} with {other.name} -> {other.oshape}")
        return Linop(
            other.ishape,
            self.oshape,
            lambda x: self._forward(other._forward(x)),
            lambda y: other._adjoint(self._adjoint(y)),
            f"{self.name}*{other.name}",
        )

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self._adjoint(self._forward(x))

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
    return Linop(grid, tuple(maps.shape), lambda x: maps * x, lambda y: (conj * y).sum(dim=0), "Coils")


class SenseOp(Linop):
    """SENSE forward model ``A = M F S``: complex image -> masked multi-coil k-space.

    Parameters
    ----------
    maps : complex tensor, shape ``(C, *grid)``
        Coil sensitivities (unit root-sum-of-squares where non-zero; a single coil of ones is plain FFT).
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
        super().__init__(chain.ishape, chain.oshape, chain._forward, chain._adjoint, "Sense")

    def data_consistent(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Put the measured samples ``y`` back into the k-space of image ``x`` and coil-combine.

        Inside the support of the (unit-RSS) maps this is ``x + A^H (y - A x)``: acquired samples come from
        the data, the others from ``x``.
        """
        coil_k = fftc(self.maps * x, self.ndim)
        coil_k = coil_k * (1 - self.mask) + y * self.mask
        return (self.maps.conj() * ifftc(coil_k, self.ndim)).sum(dim=0)
