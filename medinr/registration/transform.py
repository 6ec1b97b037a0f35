"""Warping images through world millimetres: the moving side of the transform x -> x + u(x)."""

from __future__ import annotations

import numpy as np
import torch

from medinr.geometry import Geometry, sample_grid


class Warper:
    """Samples an image at world points (trilinear in 3D, bilinear in 2D) through its own geometry.

    Parameters
    ----------
    image : ndarray or Tensor
        ``(*shape)`` or ``(C, *shape)`` array indexed ``(i, j[, k])``.
    geometry : Geometry
        Where the image lies in the world.
    device : torch device
    """

    def __init__(
        self, image: np.ndarray | torch.Tensor, geometry: Geometry, device: str | torch.device = "cpu"
    ) -> None:
        self.geometry = geometry
        self.image = torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)

    def __call__(self, xyz: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
        """Image values at world points ``xyz`` ``(..., ndim)`` mm; outside the grid the border value."""
        return sample_grid(self.image, self.geometry.world_to_network(xyz), mode=mode, padding_mode=padding_mode)
