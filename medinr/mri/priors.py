"""Image priors of the INR objective, differentiable in torch: total variation and L1 of a Haar wavelet transform.

Both act on the complex image in normalised units (robust maximum about 1) and return a mean per voxel, so
their weights mean the same on any grid size. They are the penalties of the CS baselines (SigPy's TV and
L1-wavelet) written for autograd, so that the INR can use both at once.
"""

from __future__ import annotations

import torch


def total_variation(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean isotropic TV of a complex image ``(*grid)``: sqrt(sum over axes of |forward difference|^2 + eps)."""
    inner = tuple(slice(0, n - 1) for n in image.shape)  # voxels that have a forward neighbour on every axis
    total = torch.zeros_like(image.real[inner])
    for axis in range(image.dim()):
        d = torch.diff(image, dim=axis)
        d = d[tuple(slice(None) if a == axis else inner[a] for a in range(image.dim()))]
        total = total + d.real**2 + d.imag**2
    return torch.sqrt(total + eps).mean()


def haar_details(image: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """Detail coefficients of an orthonormal separable Haar transform, ``levels`` deep, of a complex image.

    Odd axis lengths are padded by repeating the last voxel (which adds no detail energy). Returns the
    detail bands of every level (the approximation is not penalised).
    """
    details: list[torch.Tensor] = []
    approx = image
    for _ in range(levels):
        if min(approx.shape) < 2:
            break
        bands = [approx]
        for axis in range(approx.dim()):
            split = []
            for band in bands:
                if band.shape[axis] % 2:
                    band = torch.cat([band, band.narrow(axis, band.shape[axis] - 1, 1)], dim=axis)
                even, odd = band.narrow(axis, 0, band.shape[axis]).unfold(axis, 2, 2).unbind(-1)
                split += [(even + odd) * 0.5**0.5, (even - odd) * 0.5**0.5]
            bands = split
        approx = bands[0]
        details += bands[1:]
    return details


def wavelet_l1(image: torch.Tensor, levels: int = 3, eps: float = 1e-8) -> torch.Tensor:
    """Sum of |Haar detail coefficients| (smoothed at 0) over the number of voxels: the L1-wavelet penalty."""
    total = image.real.new_zeros(())
    for band in haar_details(image, levels):
        total = total + torch.sqrt(band.real**2 + band.imag**2 + eps).sum()
    return total / image.numel()
