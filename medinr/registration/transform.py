"""The INR transform x -> x + u(x): a network of world millimetres and the warping of images through it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medinr.geometry import Geometry, WorldBox, sample_grid
from medinr.models import INR


def zero_last_linear(model: nn.Module) -> bool:
    """Zero the weights and bias of the last ``nn.Linear`` so that the network starts at u = 0.

    Returns False when the model has no linear layer (its output then starts at whatever it gives).
    """
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        return False
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return True


class DisplacementField(nn.Module):
    """u(x) in world millimetres: ``model(world_box.to_network(x)) * scale_mm``.

    Parameters
    ----------
    model : INR
        ``ndim -> ndim`` network of world-box coordinates in [-1, 1].
    world_box : WorldBox
        The fixed image's box; scales world mm onto the network's input range.
    scale_mm : float
        Millimetres per unit of network output (the checkpoint's ``output.scale``).
    """

    def __init__(self, model: INR, world_box: WorldBox, scale_mm: float) -> None:
        super().__init__()
        self.model = model
        self.world_box = world_box
        self.scale_mm = float(scale_mm)

    @property
    def ndim(self) -> int:
        return self.world_box.ndim

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """Displacement in mm (RAS) at world points ``xyz`` of shape ``(..., ndim)`` in mm."""
        return self.model(self.world_box.to_network(xyz)) * self.scale_mm

    @torch.no_grad()
    def evaluate(self, xyz: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
        """Chunked, gradient-free :meth:`forward` for dense grids."""
        flat = xyz.reshape(-1, xyz.shape[-1])
        parts = [self(flat[s : s + chunk]) for s in range(0, flat.shape[0], chunk)]
        return torch.cat(parts).reshape(xyz.shape)


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
