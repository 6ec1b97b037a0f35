"""Similarity losses on sampled values: global NCC, local windowed NCC, MSE, soft Dice of labels (lower is better)."""

from __future__ import annotations

import torch

from medinr.errors import MedinrError
from medinr.registration.settings import LOSSES


def ncc(fixed: torch.Tensor, warped: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Global normalised cross-correlation of two samples (any shape), as ``1 - NCC`` in [0, 2].

    ``eps`` is added to the variances so that a flat warped sample cannot make the ratio blow up.
    """
    f = fixed.reshape(-1) - fixed.mean()
    w = warped.reshape(-1) - warped.mean()
    cov = (f * w).mean()
    return 1.0 - cov / torch.sqrt((f.square().mean() + eps) * (w.square().mean() + eps))


def lncc(fixed: torch.Tensor, warped: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Local NCC over windows: inputs ``(B, W)`` (B windows of W samples each), as ``1 - mean NCC``.

    Squared local correlation as in ANTs' CC metric would ignore the sign; we keep the signed value so
    that an inverted-contrast match is not rewarded.
    """
    if fixed.dim() != 2:
        raise MedinrError("local NCC needs samples shaped (windows, points per window)")
    f = fixed - fixed.mean(dim=1, keepdim=True)
    w = warped - warped.mean(dim=1, keepdim=True)
    cov = (f * w).mean(dim=1)
    return 1.0 - (cov / torch.sqrt((f.square().mean(dim=1) + eps) * (w.square().mean(dim=1) + eps))).mean()


def mse(fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """Mean squared intensity difference (intensities normalised to about [0, 1])."""
    return (fixed - warped).square().mean()


def similarity(name: str, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """Dispatch by name: 'ncc', 'lncc' (samples shaped (B, W)) or 'mse'."""
    if name == "ncc":
        return ncc(fixed, warped)
    if name == "lncc":
        return lncc(fixed, warped)
    if name == "mse":
        return mse(fixed, warped)
    raise MedinrError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}")


def soft_dice(fixed: torch.Tensor, warped: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - mean Dice`` of soft label maps ``(N, C)`` (one channel per label, values in [0, 1]).

    Linear interpolation of one-hot maps makes the warped labels differentiable in the sample positions.
    """
    inter = (fixed * warped).sum(dim=0)
    return 1.0 - (2.0 * inter / (fixed.sum(dim=0) + warped.sum(dim=0) + eps)).mean()
