"""A field stored at the nodes of a lattice over [-1, 1]^d and interpolated in between: the 'lattice' family.

Registration's dense transforms (the integrated stationary velocity field of :mod:`medinr.registration.svf`)
are saved as this: node values, (bi/tri)linear interpolation between them, the border value outside, and
derivatives in the coordinates by autograd (the Jacobian determinant, the viewer). It is registered with the
model zoo so that a checkpoint of it loads like any other family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medinr.geometry import sample_grid
from medinr.models.base import INR, register_model
from medinr.models.config import FamilyConfig, option
from medinr.validation import MAX_IMAGE_AXIS


def resize_lattice(values: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(C, *lattice)`` node values interpolated onto the lattice ``shape`` over the same [-1, 1] box.

    With ``align_corners`` the two lattices share their end nodes, so this equals sampling the field at the
    new nodes (what :meth:`LatticeField.forward` would give there), at a fraction of the cost.
    """
    shape = tuple(int(n) for n in shape)
    if tuple(values.shape[1:]) == shape:
        return values
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(values[None], size=shape, mode=mode, align_corners=True)[0]


@dataclass(frozen=True)
class LatticeConfig(FamilyConfig):
    """The ``lattice`` family's option and its defaults per task."""

    lattice: list[int] | None = option(None, 2, MAX_IMAGE_AXIS, items=(2, 3), units="nodes per axis",
                                       doc="nodes over [-1, 1] per axis (None: 8 per axis)")

    #: Node values are the output itself: 1e-3 needs thousands of steps to reach 0..1 intensities.
    RATES: ClassVar[dict[str, float]] = {"image": 2e-2, "reconstruction": 2e-2, "deformation": 2e-2}
    SMOOTHNESS: ClassVar[float] = 1e-2
    PRIOR: ClassVar[str] = "tv"

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: two nodes per voxel and axis (with the footprint means and the total-variation prior the fit is a
        classical TV super-resolution of the image, the plainest baseline of the zoo). Other tasks: the
        constructor's 8 nodes per axis."""
        return {"lattice": [2 * n for n in shape]} if task == "image" else {}


@register_model("lattice")
class LatticeField(INR):
    """Node values ``(out_features, *lattice)`` on ``linspace(-1, 1, n)`` per axis, linearly interpolated.

    Parameters
    ----------
    in_features, out_features : int
    lattice : sequence of int, optional
        Nodes per axis (default 8 per axis).
    """

    config_type = LatticeConfig
    separable = True

    def __init__(self, in_features: int, out_features: int, lattice: Sequence[int] | None = None) -> None:
        super().__init__(in_features, out_features)
        if in_features not in (2, 3):
            raise ValueError(f"a lattice field supports 2 or 3 input dimensions, got {in_features}")
        nodes = [8] * in_features if lattice is None else [int(n) for n in lattice]
        if len(nodes) != in_features or min(nodes) < 2:
            raise ValueError(f"lattice must give at least 2 nodes on each of the {in_features} axes, got {lattice}")
        self.resolve_config(lattice=nodes)
        self.values = nn.Parameter(torch.zeros(out_features, *nodes))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return sample_grid(self.values, coords.to(self.values.dtype), mode="bilinear", padding_mode="border")

    def forward_lattice(self, shape: Sequence[int]) -> torch.Tensor:
        """The field at every node of the lattice ``shape``: ``(*shape, C)`` (an interpolation of the nodes)."""
        return resize_lattice(self.values, shape).movedim(0, -1)

    def forward_axes(self, axes: Sequence[torch.Tensor]) -> torch.Tensor:
        """The field on the separable lattice ``axes``: ``(M_0, ..., C)`` (one linear interpolation per axis)."""
        from medinr.models.separable import interpolate_axes

        return interpolate_axes(self.values, axes).movedim(0, -1)

    def jacobian_axes(self, axes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``d output / d coord_j`` on the separable lattice ``axes`` in closed form: one ``(C, M_0, ...)`` tensor
        per network axis ``j`` (network units; the interpolant's derivative,
        :func:`medinr.models.separable.interpolate_axes`)."""
        from medinr.models.separable import interpolate_axes

        return [interpolate_axes(self.values, axes, derivative=a) for a in range(len(axes))]

    def zero_output_(self) -> None:
        with torch.no_grad():
            self.values.zero_()

    @torch.no_grad()
    def set_values(self, values: torch.Tensor) -> None:
        """Replace the node values by ``values`` ``(C, *lattice)`` (same shape)."""
        self.values.copy_(values.to(self.values))
