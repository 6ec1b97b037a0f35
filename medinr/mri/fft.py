"""Centred, orthonormal FFTs over the last 2 or 3 axes: the k-space convention of medinr (as ``sigpy.fft``)."""

from __future__ import annotations

import torch


def _dims(x: torch.Tensor, ndim: int) -> tuple[int, ...]:
    if ndim not in (1, 2, 3) or x.dim() < ndim:
        raise ValueError(f"cannot take a {ndim}D FFT of a tensor of shape {tuple(x.shape)}")
    return tuple(range(-ndim, 0))


def fftc(x: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centred orthonormal FFT over the last ``ndim`` axes: ``fftshift(fft(ifftshift(x)))``.

    The zero frequency sits at index ``N // 2`` and Parseval holds (``norm="ortho"``), so image and
    k-space energies are equal and the adjoint is :func:`ifftc`.
    """
    dims = _dims(x, ndim)
    if not x.is_complex():
        x = x.to(torch.complex64)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifftc(k: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Inverse of :func:`fftc` (and its adjoint): ``fftshift(ifft(ifftshift(k)))``, orthonormal."""
    dims = _dims(k, ndim)
    if not k.is_complex():
        k = k.to(torch.complex64)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims, norm="ortho"), dim=dims)
