"""Conv-INR (arXiv 2406.04249): a fully convolutional network from the coordinate lattice to the whole signal.

Unlike the MLP families, the output at a point depends on its neighbours on a fixed lattice, so the model is
*lattice-bound*: it is trained on its full lattice and sampled elsewhere by interpolation of its output lattice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from medinr.errors import MedinrError
from medinr.geometry import sample_grid
from medinr.models.base import INR, lattice_coords, register_model
from medinr.models.config import FamilyConfig, option
from medinr.validation import MAX_IMAGE_AXIS


@dataclass(frozen=True)
class ConvINRConfig(FamilyConfig):
    """Conv-INR's options and its defaults per task."""

    lattice: list[int] | None = option(None, 2, MAX_IMAGE_AXIS, items=(2, 3), units="points per axis",
                                       doc="the grid the network works on (required; usually the image's)")
    channels: int = option(64, 1, 4096, doc="feature channels of the hidden blocks")
    layers: int = option(4, 0, 256, doc="conv-norm-ReLU blocks")
    kernel_size: int = option(3, 1, 31, units="points", doc="odd kernel size of the hidden convolutions")

    RATES: ClassVar[dict[str, float]] = {"image": 1e-3, "reconstruction": 1e-3, "deformation": 1e-3}
    SMOOTHNESS: ClassVar[float] = 3e-4

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: the lattice is twice as fine as the image in 2D (trained through the voxels' footprint means, so
        that it can hold detail between the voxel centres), the image's own grid in 3D (a 2x lattice of a brain
        volume would need ~16 GB per block). Other tasks: none (the caller names the lattice)."""
        if task != "image":
            return {}
        factor = 2 if len(shape) == 2 else 1
        return {"lattice": [factor * n for n in shape]}


@register_model("conv_inr")
class ConvINR(INR):
    """Fully convolutional INR tied to a lattice.

    The network input is the lattice of network coordinates, ``(d, *lattice)`` channels-first (as
    ``Geometry(lattice, ...).network_grid()``: -1 and +1 at the first and last voxel centres), passed through
    ``layers`` blocks of ``conv k x k (x k) -> normalisation -> ReLU`` of ``channels`` channels (Conv2d in 2D,
    Conv3d in 3D) and a 1x1 convolution to ``out_features`` channels: the whole signal at once.

    **Sampling off the lattice.** :meth:`forward` keeps the INR interface: for coordinates ``(..., d)`` it computes
    the lattice output (:meth:`lattice_output`) and samples it by continuous (bi/tri)linear interpolation with
    :func:`medinr.geometry.sample_grid` (``align_corners=True``, border padding). At the lattice points this
    returns the lattice output itself (up to float rounding of the coordinates); between them the model is
    the linear interpolant of its lattice, so it does not add detail finer than its lattice. Every forward
    call runs the network on the full lattice, so train it with full-lattice batches (random coordinate
    batches work but each costs a full lattice pass). Without autograd, the lattice output is cached and
    reused until a parameter changes (an optimiser step, ``load_state_dict``), which makes chunked
    :meth:`evaluate` compute the network once.

    **Normalisation.** BatchNorm without running statistics (``track_running_stats=False``): the statistics
    are always those of the current pass over the single lattice. The input is always the same lattice, so
    train and eval mode give identical outputs and a checkpoint needs no running buffers (the paper's batch
    norm in eval mode would otherwise switch to running averages and change the output).

    Parameters
    ----------
    in_features, out_features : int
        ``in_features`` must equal ``len(lattice)`` (2 or 3).
    lattice : sequence of int
        The grid shape ``(n_i, n_j[, n_k])`` the network works on (required), usually the image's shape.
    channels : int
        Feature channels of the hidden blocks (default 64).
    layers : int
        Number of conv-norm-ReLU blocks (default 4).
    kernel_size : int
        Odd kernel size of the hidden convolutions (default 3).

    Notes
    -----
    Memory grows with the lattice: each block keeps about ``channels * prod(lattice)`` floats for backward
    (a 256x256 lattice at 64 channels: 17 MB per block; a 1 mm brain volume: ~2 GB per block).
    """

    lattice_bound = True
    config_type = ConvINRConfig

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lattice: Sequence[int] | None = None,
        channels: int = 64,
        layers: int = 4,
        kernel_size: int = 3,
    ) -> None:
        if lattice is None:
            raise MedinrError("conv_inr needs the option lattice=(n_i, n_j[, n_k]), the grid it is tied to")
        lattice = [int(n) for n in lattice]
        if len(lattice) != in_features or in_features not in (2, 3):
            raise MedinrError(f"conv_inr needs a 2D or 3D lattice matching in_features={in_features}, got {lattice}")
        if min(lattice) < 2:
            raise MedinrError(f"conv_inr needs at least 2 points per lattice axis, got {lattice}")
        if kernel_size % 2 != 1:
            raise MedinrError(f"conv_inr needs an odd kernel_size, got {kernel_size}")
        super().__init__(in_features, out_features)
        self.resolve_config(lattice=lattice)
        self.lattice = tuple(lattice)
        conv = nn.Conv2d if in_features == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if in_features == 2 else nn.BatchNorm3d
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [
                conv(width, channels, kernel_size, padding=kernel_size // 2),
                norm(channels, track_running_stats=False),
                nn.ReLU(),
            ]
            width = channels
        blocks.append(conv(width, out_features, 1))
        self.net = nn.Sequential(*blocks)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def lattice_output(self) -> torch.Tensor:
        """The network's output on its lattice, ``(out_features, *lattice)``."""
        weight = next(self.parameters())
        grid = lattice_coords(self.lattice, weight.device).to(weight.dtype)
        inp = grid.movedim(-1, 0).unsqueeze(0)  # (1, d, *lattice)
        return self.net(inp)[0]

    def _state_key(self) -> tuple:
        # In-place updates (optimiser steps, load_state_dict) bump a tensor's version counter.
        return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in self.parameters())

    def _cached_lattice_output(self) -> torch.Tensor:
        key = self._state_key()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.lattice_output())
        return self._cache[1]

    def forward_lattice(self, shape: Sequence[int]) -> torch.Tensor:
        """The output on ``shape``: the network's own lattice pass when ``shape`` is its lattice."""
        if tuple(int(n) for n in shape) == self.lattice:
            return self.lattice_output().movedim(0, -1)
        return super().forward_lattice(shape)

    def zero_output_(self) -> None:
        head = self.net[-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
        self._cache = None

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Sample the lattice output at ``coords (..., d)`` by (bi/tri)linear interpolation; ``(..., out)``."""
        if torch.is_grad_enabled():
            self._cache = None
            lattice = self.lattice_output()
        else:
            lattice = self._cached_lattice_output()
        return sample_grid(lattice, coords.to(lattice.dtype), mode="bilinear", padding_mode="border")
