"""The continuous image: a trained network, where it lives in the world, what its output means, and how to query it.

``fit_image``, ``inr_reconstruct`` and ``register`` each return a :class:`ContinuousImage`; rendering, the
napari plugin, the benchmarks and the pipelines only consume it. It is also what a ``.inr`` file holds
(:mod:`medinr.checkpoint` saves and loads it; the rules between its parts live in :mod:`medinr.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.models import INR
from medinr.schema import FRAMES, OUTPUT_KINDS, OutputMeaning, check_layout

__all__ = ["FRAMES", "OUTPUT_KINDS", "ContinuousImage", "OutputMeaning"]


@dataclass(eq=False)  # identity semantics: an image is a live network, and caches key on it
class ContinuousImage:
    """A network that maps world millimetres to values in the input's units.

    Attributes
    ----------
    model : INR
    geometry : Geometry or None
        The grid the network was fitted on (affine, shape, spacing); None only for bare models.
    output : OutputMeaning
    frame : {'network', 'world_box', 'identity'}
        See :data:`FRAMES`.
    world_box : WorldBox or None
        The box of a 'world_box' frame.
    extra : dict
        Free-form JSON metadata (settings of the fit, metrics, ...), saved with the checkpoint.
    history : FitResult or None
        What the fit that made it did (losses, metrics, time); not saved.

    Notes
    -----
    Calling the object (``image(xyz)``) is differentiable (registration trains through it); :meth:`evaluate`
    and :meth:`sample` are the chunked, gradient-free queries that rendering uses.
    """

    model: INR
    geometry: Geometry | None = None
    output: OutputMeaning = field(default_factory=OutputMeaning)
    frame: str = "network"
    world_box: WorldBox | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    history: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.output, dict):
            self.output = OutputMeaning.from_dict(self.output)
        check_layout(self.frame, self.geometry, self.world_box, self.output, self.model.in_features,
                     self.model.out_features)

    # -- constructors --------------------------------------------------------------------------------------
    @classmethod
    def bare(cls, model: INR) -> "ContinuousImage":
        """A model in its own network coordinates (world = network, raw output)."""
        return cls(model=model, geometry=None, frame="identity")

    @classmethod
    def of(cls, source: "ContinuousImage | INR") -> "ContinuousImage":
        """``source`` itself, or a bare model wrapped by :meth:`bare`."""
        if isinstance(source, ContinuousImage):
            return source
        if isinstance(source, INR):
            return cls.bare(source)
        raise MedinrError(f"expected a ContinuousImage or an INR, got {type(source).__name__}")

    # -- what it covers ----------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.output.kind

    @property
    def ndim(self) -> int:
        """World dimensions (2 or 3)."""
        if self.geometry is not None:
            return self.geometry.ndim
        if self.world_box is not None:
            return self.world_box.ndim
        return int(self.model.in_features)

    @property
    def lattice_bound(self) -> bool:
        return bool(self.model.lattice_bound)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World box ``(lo, hi)`` mm of the fitted region (voxel centres), or [-1, 1] for a bare model."""
        if self.geometry is not None:
            box = self.geometry.world_box()
            return box.lo, box.hi
        if self.world_box is not None:
            return self.world_box.lo, self.world_box.hi
        return -np.ones(self.ndim), np.ones(self.ndim)

    @property
    def spacing_mm(self) -> float:
        """The finest voxel size of the training grid, mm (the natural pixel size of a render)."""
        if self.geometry is not None:
            return float(self.geometry.spacing[: self.ndim].min())
        lo, hi = self.bounds()
        return float((hi - lo).max() / 255.0)

    def voxel_extent(self) -> np.ndarray:
        """World extent of one training voxel along each world axis, mm."""
        if self.geometry is not None:
            n = self.geometry.ndim
            return np.abs(self.geometry.affine_nd[:n, :n]).sum(axis=1)
        return np.full(self.ndim, self.spacing_mm)

    def to_network(self, xyz: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Network input coordinates of world points (mm), numpy or torch alike."""
        if self.frame == "identity":
            return xyz
        if self.frame == "world_box":
            return self.world_box.to_network(xyz)  # type: ignore[union-attr]
        return self.geometry.world_to_network(xyz)  # type: ignore[union-attr]

    def inside_margin(self) -> np.ndarray | None:
        """How far past [-1, 1] (network units, per axis) the fitted data reach: half a voxel; None: no limit."""
        if self.frame == "identity":
            return None
        if self.frame == "network":
            n = np.asarray(self.geometry.shape, dtype=np.float64)  # type: ignore[union-attr]
            return np.where(n > 1, 1.0 / np.maximum(n - 1, 1), 1.0)
        if self.geometry is not None:
            return self.geometry.spacing[: self.ndim] / 2 / self.world_box.half_extent_mm  # type: ignore[union-attr]
        return np.full(self.ndim, 0.02)

    def inside(self, coords: torch.Tensor) -> torch.Tensor:
        """True for network coordinates within half a voxel of the fitted box."""
        margin = self.inside_margin()
        if margin is None:
            return torch.ones(coords.shape[:-1], dtype=torch.bool, device=coords.device)
        lim = torch.as_tensor(1.0 + margin + 1e-6, dtype=coords.dtype, device=coords.device)
        return (coords.abs() <= lim).all(dim=-1)

    # -- evaluation ----------------------------------------------------------------------------------------
    def to_output_units(self, values: torch.Tensor) -> torch.Tensor:
        """Map raw network outputs to the units of the data the network was fitted to."""
        if self.output.scale == 1.0 and self.output.offset == 0.0:
            return values
        return values * self.output.scale + self.output.offset

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """Values in output units at world points ``(..., ndim)`` mm; differentiable (no chunking)."""
        values = self.to_output_units(self.model(self.to_network(xyz)))
        return values if self.output.affine is None else values + self.output.affine_displacement(xyz)

    __call__ = forward

    @torch.no_grad()
    def evaluate(
        self,
        xyz: np.ndarray | torch.Tensor,
        chunk: int | None = None,
        outside: float | None = None,
        compile: bool = False,
    ) -> torch.Tensor:
        """Chunked, gradient-free values in output units at world points ``(..., ndim)`` mm: ``(..., C)`` float32.

        ``outside``: value for points more than half a voxel outside the fitted box (not evaluated); None
        evaluates everywhere (extrapolation). ``compile``: through ``torch.compile`` (see :meth:`INR.evaluate`).
        """
        dev = self.model.device
        pts = xyz if isinstance(xyz, torch.Tensor) else torch.from_numpy(np.asarray(xyz, dtype=np.float64))
        lead = pts.shape[:-1]
        coords = self.to_network(pts.reshape(-1, pts.shape[-1]).to(dev, torch.float64)).to(torch.float32)
        inside = None if outside is None else self.inside(coords)
        keep: torch.Tensor | slice = slice(None)  # the points the network is evaluated at
        if inside is None or bool(inside.all()):  # (a plane inside the box, the viewer's usual frame: no gather)
            values = self.to_output_units(self.model.evaluate(coords, chunk=chunk, compile=compile))
        else:
            values = torch.full((coords.shape[0], self.model.out_features), float(outside), device=dev)
            keep = inside.nonzero().squeeze(1)
            if keep.numel():
                raw = self.model.evaluate(coords[keep], chunk=chunk, compile=compile)
                values[keep] = self.to_output_units(raw).float()
        if self.output.affine is not None:  # the global part of a displacement, where the network was evaluated
            flat = pts.reshape(-1, pts.shape[-1]).to(dev, torch.float64)
            values[keep] = values[keep] + self.output.affine_displacement(flat[keep]).float()
        return values.float().reshape(*lead, self.model.out_features)

    def sample(self, xyz: np.ndarray | torch.Tensor, **options: Any) -> np.ndarray:
        """:meth:`evaluate` as a NumPy array."""
        return self.evaluate(xyz, **options).cpu().numpy()

    def on_own_grid(self, geometry: Geometry) -> bool:
        """Whether ``geometry``'s voxel centres are the lattice of a network-frame image's training grid (where
        its family's lattice paths apply)."""
        return self.frame == "network" and self.geometry is not None and geometry == self.geometry \
            and tuple(geometry.shape) == tuple(self.geometry.shape)

    @torch.no_grad()
    def on_grid(self, geometry: Geometry | None = None, chunk: int | None = None) -> np.ndarray:
        """Values at every voxel centre of ``geometry`` (default: the training grid): ``(*shape, C)`` float32.

        On its own training grid a network-frame image uses the family's lattice path (one pass for dense
        grids and Conv-INR); elsewhere every voxel is a world point.
        """
        geom = geometry if geometry is not None else self.geometry
        if geom is None:
            raise MedinrError("this image has no training grid: give the grid to sample")
        if self.on_own_grid(geom):
            was_training = self.model.training
            self.model.eval()
            try:
                raw = self.model.forward_lattice(geom.shape)
            finally:
                self.model.train(was_training)
            values = self.to_output_units(raw).float()
            if self.output.affine is not None:  # the global part of a displacement, as forward() adds it
                world = geom.world_grid(dtype=torch.float64, device=values.device)
                values = values + self.output.affine_displacement(world).float()
            return values.cpu().numpy()
        # one plane of the grid at a time bounds the float64 world-point array as well as the network batches
        out = np.empty((*geom.shape, self.model.out_features), dtype=np.float32)
        vox = geom.voxel_grid(dtype=torch.float64)
        for i in range(geom.shape[0]):
            out[i] = self.sample(geom.voxel_to_world(vox[i]), chunk=chunk)
        return out

    def describe(self) -> str:
        """One line for the UI/CLI: family, dimension, output kind and how values between samples arise."""
        text = f"{self.model.family} {self.ndim}D {self.kind}"
        if self.lattice_bound:
            return text + " (lattice-bound: values between lattice points are interpolated from its grid output)"
        return text + " (evaluated at every pixel)"
