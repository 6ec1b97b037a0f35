"""A dense multiresolution feature grid with a small MLP: a fast image-domain INR for reconstruction ("mrgrid").

Each level is a dense lattice of features over [-1, 1]^d, resolutions growing geometrically up to the image
grid; a point's features are the (bi/tri)linear interpolations at every level, concatenated and decoded by a
ReLU MLP. On the image's own lattice the interpolation is an upsampling (``forward_lattice``), which is what
makes a full-grid k-space fit cheap; off the lattice it is ``medinr.geometry.sample_grid``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medinr.geometry import sample_grid
from medinr.models.base import INR, register_model, zero_linear_
from medinr.models.encodings import relu_mlp


@register_model("mrgrid")
class MultiResGrid(INR):
    """Dense multiresolution grid + ReLU MLP.

    Parameters
    ----------
    in_features, out_features : int
    levels : int
        Number of resolution levels (default 4).
    features_per_level : int
        Features per lattice vertex and level (default 4).
    base_resolution, max_resolution : int
        Vertices per axis of the coarsest and finest level (the finest should match the image grid).
    hidden, layers : int
        Width and number of hidden ReLU layers of the decoder (``layers = 0``: linear decoder).
    grid_lr_scale : float
        The grids train at this multiple of the base learning rate (see :meth:`param_groups`).
    """

    default_lr = 2e-2  # a k-space fit of a dense grid converges slowly at the usual 1e-3

    def __init__(
        self,
        in_features: int,
        out_features: int,
        levels: int = 4,
        features_per_level: int = 4,
        base_resolution: int = 32,
        max_resolution: int = 256,
        hidden: int = 32,
        layers: int = 1,
        grid_lr_scale: float = 10.0,
    ) -> None:
        super().__init__(in_features, out_features)
        if in_features not in (2, 3):
            raise ValueError(f"mrgrid supports 2 or 3 input dimensions, got {in_features}")
        growth = (max_resolution / base_resolution) ** (1.0 / max(1, levels - 1))
        self.resolutions = [max(2, int(round(base_resolution * growth**level))) for level in range(levels)]
        self.grid_lr_scale = float(grid_lr_scale)
        self.grids = nn.ParameterList(
            nn.Parameter(torch.empty(features_per_level, *([r] * in_features)).uniform_(-1e-4, 1e-4))
            for r in self.resolutions
        )
        self.mlp = relu_mlp(levels * features_per_level, hidden, layers, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        feats = [sample_grid(g, coords, mode="bilinear", padding_mode="border") for g in self.grids]
        return self.mlp(torch.cat(feats, dim=-1))

    def forward_lattice(self, shape: Sequence[int]) -> torch.Tensor:
        """The output on the full lattice of ``shape`` (voxel centres at network coordinates ``linspace(-1, 1)``).

        Equal to ``forward(network_grid(shape))``: with ``align_corners=True`` an upsampling samples the
        grids at exactly those points, at a fraction of the cost of a general ``grid_sample``.
        """
        mode = "bilinear" if self.in_features == 2 else "trilinear"
        feats = [F.interpolate(g[None], size=tuple(shape), mode=mode, align_corners=True)[0] for g in self.grids]
        stacked = torch.cat(feats, dim=0)  # (F_total, *shape)
        return self.mlp(stacked.movedim(0, -1))

    def zero_output_(self) -> None:
        zero_linear_(self.mlp[-1])

    def param_groups(self, base_lr: float) -> list[dict]:
        """Adam groups: the grids at ``grid_lr_scale * base_lr``, the decoder at ``base_lr``."""
        return [
            {"params": list(self.grids.parameters()), "lr": base_lr * self.grid_lr_scale},
            {"params": list(self.mlp.parameters()), "lr": base_lr},
        ]
