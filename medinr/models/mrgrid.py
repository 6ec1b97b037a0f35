"""A dense multiresolution feature grid with a small MLP: a fast image-domain INR for reconstruction ("mrgrid").

Each level is a dense lattice of features over [-1, 1]^d, resolutions growing geometrically up to the image
grid; a point's features are the (bi/tri)linear interpolations at every level, concatenated and decoded by a
ReLU MLP. On the image's own lattice the interpolation is an upsampling (``forward_lattice``), which is what
makes a full-grid k-space fit cheap; off the lattice it is ``medinr.geometry.sample_grid``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medinr.geometry import sample_grid
from medinr.models.base import INR, register_model, zero_linear_
from medinr.models.config import FamilyConfig, option
from medinr.models.encodings import relu_mlp
from medinr.models.separable import channel_first_mlp, interpolate_axes

#: Activations (points x widest layer) per forward call of an evaluation without gradients: 2^21 floats, 8 MiB.
#: A dense grid's decoder is narrow, and at DEFAULT_CHUNK its evaluation was bound by per-call overhead: an exact
#: 910 x 606 frame, 2 threads, medians of interleaved runs: the viewer's sample (64 wide, now 32768 points per
#: call) 213 -> 203 ms, with 65536 188; the default 3D fit's decoder (32 wide, now 65536) 133 -> 89 ms; a 128-wide
#: decoder (16384, unchanged) was no faster with 32768 (309 -> 346).
EVAL_ACTIVATIONS = 1 << 21


def level_resolutions(levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Vertices per axis of each level: geometric from ``base_resolution`` to ``max_resolution`` (at least 2)."""
    growth = (max_resolution / base_resolution) ** (1.0 / max(1, levels - 1))
    return [max(2, int(round(base_resolution * growth**level))) for level in range(levels)]


#: Finest lattice of an image fit, in nodes per voxel of the largest axis: 2 in 2D (room for the detail a
#: footprint-mean fit recovers inside a voxel); 1.25 in 3D (2 would hold 8x as many nodes as voxels). On the 3D
#: zoom panel of bench/models.py (2x zoom) 1.25 gave the 2 mm MNI volume +1.11 dB (34.45 -> 35.56; inside the brain
#: 29.74 -> 30.64, cubic 30.70) and its 48^3 crop +0.35, the two 4 mm volumes -0.11 and -0.17 (they stop earlier
#: on their held-out voxels); 1.5 gave the MNI volume +1.15 and the 4 mm volumes -0.16 and -0.30 (1.7x the nodes).
FINEST_PER_VOXEL = {2: 2.0, 3: 1.25}


#: Reconstruction levels in nodes per voxel of the grid's largest axis: (finest, coarsest) per dimension. In 2D
#: the finest has 2 nodes per voxel and the coarsest a quarter (64 .. 512 at 256); before, 1 and an eighth
#: (32 .. 256). Chosen on bench/recon.py's panel (36 cases, INR alone, the old levels / these / 1 and a quarter):
#: 4x median +0.36 dB (worst -0.16), the 16-coil 384 x 396 case +0.63 (the finer of 1 and a quarter alone: +0.23),
#: 8x median -0.02 (22 cases, -0.46 .. +0.52, seed-to-seed noise of a fit on ~12 random lines), the measured GRE
#: -0.04; the time did not move (the lattice is evaluated once per step at the image's size). In 3D the old
#: levels stay: 2 nodes per voxel would be 8x the parameters of a volume (an unmeasured cost).
RECONSTRUCTION_NODES_PER_VOXEL = {2: (2.0, 0.25), 3: (1.0, 0.125)}


def reconstruction_levels(shape: Sequence[int]) -> dict[str, int]:
    """A dense grid's levels for a reconstruction on grid ``shape`` (:data:`RECONSTRUCTION_NODES_PER_VOXEL` times
    its largest axis; the coarsest at least 4): a coarse-to-fine basis on any size (``mrgrid`` and the KAN's grid
    encoding)."""
    largest = max(shape)
    finest, coarsest = RECONSTRUCTION_NODES_PER_VOXEL[len(shape)]
    return {"max_resolution": int(round(finest * largest)), "base_resolution": max(4, int(round(coarsest * largest)))}


def finest_resolution(shape: Sequence[int]) -> int:
    """Finest lattice (nodes per axis) of an image fit on grid ``shape``: :data:`FINEST_PER_VOXEL` times its
    largest axis."""
    return int(round(max(shape) * FINEST_PER_VOXEL[len(shape)]))


#: Features per vertex and level of an image fit in 3D (4 in 2D). A volume's fit is bound by its steps, not its
#: capacity: at the same steps, 2 features cost 0.75x per step (half the parameters: the 2 mm MNI volume 4.3 M
#: instead of 8.6 M, with 1 node per voxel; 7.8 M at :data:`FINEST_PER_VOXEL`) and the 3D zoom panel of
#: bench/models.py came out within 0.1 dB on the three smaller volumes and 0.5 dB under 4 features on the MNI
#: volume, whose steps the saving pays for (see image_fit.TILE_EPOCHS).
VOLUME_FEATURES = 2


def make_grids(in_features: int, resolutions: Sequence[int], features: int, init: float = 1e-4) -> nn.ParameterList:
    """One ``(features, r, r[, r])`` feature lattice per resolution, U(-init, init)."""
    return nn.ParameterList(
        nn.Parameter(torch.empty(features, *([r] * in_features)).uniform_(-init, init)) for r in resolutions
    )


def sample_levels(grids: Sequence[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    """Every level's features at ``coords (..., d)`` (bi/trilinear, border padding), concatenated: ``(..., L F)``."""
    return torch.cat([sample_grid(g, coords, mode="bilinear", padding_mode="border") for g in grids], dim=-1)


def lattice_levels(grids: Sequence[torch.Tensor], shape: Sequence[int],
                   active_levels: int | None = None) -> list[torch.Tensor]:
    """Every level's features on the full lattice ``shape`` (``linspace(-1, 1, n)`` per axis): ``(F, *shape)`` each.

    Equal to :func:`sample_levels` at those points: with ``align_corners=True`` a resampling (up or down) samples
    the grids at exactly them, at a fraction of the cost of a general ``grid_sample`` (forward and backward on a
    23 x 28 x 22 lattice from four levels of 32..64 vertices: 2.9 ms, against 12 ms at the points). Levels beyond
    the ``active_levels`` coarsest give zero features (coarse to fine).
    """
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    size = tuple(int(n) for n in shape)
    return [F.interpolate(grid[None], size=size, mode=mode, align_corners=True)[0]
            if active_levels is None or level < active_levels else grid.new_zeros(grid.shape[0], *size)
            for level, grid in enumerate(grids)]


def axes_levels(grids: Sequence[torch.Tensor], axes: Sequence[torch.Tensor],
                active_levels: int | None = None) -> torch.Tensor:
    """Every level's features on the separable lattice ``axes``, channel first: ``(L F, M_0, ...)``
    (:func:`interpolate_axes`); levels beyond the ``active_levels`` coarsest give zero features."""
    size = [len(x) for x in axes]
    return torch.cat([interpolate_axes(g, axes) if active_levels is None or level < active_levels
                      else g.new_zeros(g.shape[0], *size) for level, g in enumerate(grids)], dim=0)


def levels_within(resolutions: Sequence[int], nodes: int) -> int:
    """How many of the levels of ``resolutions`` (coarsest first) have at most ``nodes`` vertices per axis."""
    return sum(1 for r in resolutions if r <= nodes)


def _resolution(default: int, doc: str) -> int:
    return option(default, 1, 1 << 16, units="vertices per axis", doc=doc)


@dataclass(frozen=True)
class GridEncodingConfig(FamilyConfig):
    """Options of :class:`GridEncoding` (the KAN's ``encoding_options`` for ``encoding='grid'``)."""

    levels: int = option(4, 1, 64, doc="resolution levels")
    features_per_level: int = option(4, 1, 64, doc="features per vertex and level")
    base_resolution: int = _resolution(32, "coarsest level (levels grow geometrically; at least 2)")
    max_resolution: int = _resolution(256, "finest level")
    init: float = option(1e-4, 0, 1, doc="features start uniform in [-init, init]")


@dataclass(frozen=True)
class MultiResGridConfig(FamilyConfig):
    """The ``mrgrid`` family's options and its defaults per task."""

    levels: int = option(4, 1, 64, doc="resolution levels")
    features_per_level: int = option(4, 1, 64, doc="features per vertex and level")
    base_resolution: int = _resolution(32, "coarsest level (levels grow geometrically; at least 2)")
    max_resolution: int = _resolution(256, "finest level (should match the image grid)")
    hidden: int = option(32, 1, 1 << 16, units="units", doc="width of the decoder's ReLU layers")
    layers: int = option(1, 0, 256, doc="ReLU layers of the decoder (0: linear)")
    grid_lr_scale: float = option(10.0, 0, 1e4, low_open=True, units="x base lr", doc="learning rate of the grids")

    RATES: ClassVar[dict[str, float]] = {
        "image": 2e-3,  # 2e-2 memorises the voxels in a few dozen steps, before the prior acts
        "reconstruction": 2e-2,  # a k-space fit of a dense grid converges slowly at the usual 1e-3
        "deformation": 2e-2,
    }
    #: Total variation over the footprint lattice: on the zoom panel of bench/models.py (six slices, 2x) a weight
    #: of 1e-2 gave +1.18 dB over cubic interpolation (median; worst +0.21), the annealed curvature prior -0.06.
    SMOOTHNESS: ClassVar[float] = 1e-2
    PRIOR: ClassVar[str] = "tv"

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: the finest level follows the grid (:func:`finest_resolution`), :data:`VOLUME_FEATURES` in 3D.
        Reconstruction: :func:`reconstruction_levels` (in 2D 2 nodes per voxel of the largest axis at the finest
        level, a quarter at the coarsest): a coarse-to-fine basis on any size."""
        if task == "image":
            volume = {"features_per_level": VOLUME_FEATURES} if len(shape) == 3 else {}
            return {"max_resolution": finest_resolution(shape), **volume}
        if task == "reconstruction":
            return reconstruction_levels(shape)
        return {}


class GridEncoding(nn.Module):
    """The dense multiresolution feature grid alone, as an encoding for another network (the KAN's ``'grid'``).

    Parameters are those of :class:`MultiResGrid`; ``out_features = levels * features_per_level``. Features start
    at U(-init, init).
    """

    def __init__(self, in_features: int, levels: int = 4, features_per_level: int = 4, base_resolution: int = 32,
                 max_resolution: int = 256, init: float = 1e-4) -> None:
        super().__init__()
        if in_features not in (2, 3):
            raise ValueError(f"a grid encoding supports 2 or 3 input dimensions, got {in_features}")
        self.in_features = int(in_features)
        self.resolutions = level_resolutions(levels, base_resolution, max_resolution)
        self.grids = make_grids(in_features, self.resolutions, features_per_level, init)
        self.out_features = levels * features_per_level

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return sample_levels(self.grids, coords)

    def forward_axes(self, axes: Sequence[torch.Tensor], active_levels: int | None = None) -> torch.Tensor:
        """Every level's features on the separable lattice ``axes``, channel first: ``(L F, M_0, ...)``; levels
        beyond the ``active_levels`` coarsest give zero features."""
        return axes_levels(self.grids, axes, active_levels)

    def forward_lattice(self, shape: Sequence[int]) -> torch.Tensor:
        """Every level's features on the full lattice ``shape`` (:func:`lattice_levels`): ``(L F, *shape)``."""
        return torch.cat(lattice_levels(self.grids, shape), dim=0)


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

    config_type = MultiResGridConfig
    separable = True
    block_updates = True

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
        self.resolutions = level_resolutions(levels, base_resolution, max_resolution)
        self.grid_lr_scale = float(grid_lr_scale)
        self.grids = make_grids(in_features, self.resolutions, features_per_level)
        self.mlp = relu_mlp(levels * features_per_level, hidden, layers, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp(sample_levels(self.grids, coords))

    def forward_axes(self, axes: Sequence[torch.Tensor], active_levels: int | None = None) -> torch.Tensor:
        """The output on the separable lattice ``axes``: ``(M_0, ..., C)`` (per-axis interpolation of every level,
        the decoder channel first); levels beyond the ``active_levels`` coarsest give zero features."""
        feats = axes_levels(self.grids, axes, active_levels)
        out = channel_first_mlp(self.mlp, feats.reshape(feats.shape[0], -1))
        return out.reshape(self.out_features, *feats.shape[1:]).movedim(0, -1)

    @property
    def eval_chunk(self) -> int:
        """Points per forward call of an evaluation: :data:`EVAL_ACTIVATIONS` over the widest layer (4k-64k)."""
        widths = [layer.out_features for layer in self.mlp if isinstance(layer, nn.Linear)]
        widest = max(self.mlp[0].in_features, *widths)
        return int(min(1 << 16, max(1 << 12, EVAL_ACTIVATIONS // widest)))

    @property
    def capacity_levels(self) -> int:
        """The dense levels, switched on coarsest first by a coarse-to-fine schedule."""
        return len(self.grids)

    def levels_within(self, nodes: int) -> int:
        return levels_within(self.resolutions, nodes)

    def forward_lattice(self, shape: Sequence[int], active_levels: int | None = None) -> torch.Tensor:
        """The output on the full lattice of ``shape`` (voxel centres at network coordinates ``linspace(-1, 1)``).

        Equal to ``forward(network_grid(shape))`` (:func:`lattice_levels`). The decoder runs channel first on the
        resampled features (no channel-last copy of them); levels beyond the ``active_levels`` coarsest contribute
        zero features (coarse to fine).
        """
        feats = lattice_levels(self.grids, shape, active_levels)
        h = torch.cat(feats, dim=0).reshape(len(feats) * feats[0].shape[0], -1)  # (features, voxels)
        for layer in self.mlp:
            h = h.relu_() if isinstance(layer, nn.ReLU) else layer.weight @ h + layer.bias[:, None]
        return h.reshape(self.out_features, *shape).movedim(0, -1)  # channel-last view of channel-first memory

    def zero_output_(self) -> None:
        zero_linear_(self.mlp[-1])

    def param_groups(self, base_lr: float) -> list[dict]:
        """Adam groups: the grids at ``grid_lr_scale * base_lr``, the decoder at ``base_lr``."""
        return [
            {"params": list(self.grids.parameters()), "lr": base_lr * self.grid_lr_scale},
            {"params": list(self.mlp.parameters()), "lr": base_lr},
        ]
