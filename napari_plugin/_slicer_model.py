"""The slicer's state without Qt: which image, which plane, which tier is on screen, and what to render next.

The dock widget (``_widget.py``) only turns controls and camera events into calls here and puts the results
on layers; everything that decides *what* is drawn (plane, request, tier, generation of the current view,
colour map and contrast of the shown quantity, the cursor read-out in RAS mm) lives in :class:`SlicerModel`,
so it is tested without a viewer (napari-animation splits its widget the same way).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.render import CachedLattice, Plane, components_of, default_plane, exact_blocks, resolve_component
from medinr.render.lattice import jacobian_steps
from napari_plugin._viewport import ViewRequest, visible_request

#: Pixels per side of the tilted plane shown in the 3D view.
CONTEXT_SIDE = 256
LATTICE, EXACT = "lattice", "exact"


@dataclass(frozen=True)
class PlaneControls:
    """What the controls say: a preset or a normal, two tilts (deg), an offset (mm), a component."""

    preset: str = "axial"
    normal: str = ""
    tilt_deg: tuple[float, float] = (0.0, 0.0)
    offset_mm: float = 0.0
    component: str = "auto"


@dataclass(frozen=True)
class ViewState:
    """What the camera shows: display mode, centre in plane mm (2D), zoom (screen px per mm), canvas (h, w)."""

    ndisplay: int
    center_rc_mm: tuple[float, float]
    zoom: float
    canvas_hw: tuple[int, int]


@dataclass(frozen=True)
class Shown:
    """The frame on screen: its tier, request, generation and how long it took."""

    tier: str
    request: ViewRequest
    generation: int
    seconds: float


@dataclass(frozen=True)
class Display:
    """Colour map and contrast limits of a shown quantity."""

    colormap: str
    contrast_limits: tuple[float, float]


class SlicerModel:
    """State of one slicer: image, lattice, controls, current generation and what is on screen."""

    def __init__(self) -> None:
        self.image: ContinuousImage | None = None
        self.lattice: CachedLattice | None = None
        self.controls = PlaneControls()
        self.generation = 0
        self.shown: Shown | None = None
        self.exact_count = 0
        self.fast_count = 0
        self._display: dict[Any, Display] = {}
        self._volumes: dict[Any, np.ndarray] = {}

    # -- image and plane -----------------------------------------------------------------------------
    def set_image(self, image: ContinuousImage, lattice: CachedLattice | None = None) -> None:
        self.image, self.lattice, self.shown = image, lattice, None
        self._display.clear()
        self._volumes.clear()
        self.controls = replace(self.controls, component=components_of(image)[0])
        self.generation += 1

    def set_lattice(self, lattice: CachedLattice) -> None:
        self.lattice = lattice
        self._display.clear()  # limits from the whole lattice replace those from a first frame
        self._volumes.clear()

    def volume(self) -> np.ndarray:
        """The lattice as one volume of the shown component (the 3D view), computed once per component."""
        comp = self.component
        if comp not in self._volumes:
            self._volumes[comp] = np.ascontiguousarray(self.lattice.volume(comp))  # type: ignore[union-attr]
        return self._volumes[comp]

    def update(self, **controls: Any) -> None:
        """Change controls (``preset``, ``normal``, ``tilt_deg``, ``offset_mm``, ``component``)."""
        self.controls = replace(self.controls, **controls)

    @property
    def component(self) -> str | int:
        return resolve_component(self.image, self.controls.component)

    def base_plane(self) -> Plane:
        """The whole slice the controls describe (a 2D image shows its own plane)."""
        image, c = self.image, self.controls
        if image.ndim == 2:
            return default_plane(image)
        return default_plane(image, c.normal.strip() or c.preset, c.offset_mm, c.tilt_deg)

    def request(self, view: ViewState) -> ViewRequest:
        """The pixels to render: the visible region at screen resolution in 2D, the whole tilted plane in 3D."""
        base = self.base_plane()
        if view.ndisplay == 3:
            side = CONTEXT_SIDE / max(base.fov_mm)
            shape = (max(1, int(base.fov_mm[0] * side)), max(1, int(base.fov_mm[1] * side)))
            return ViewRequest(base, shape, base.spacing(shape), (0.0, 0.0))
        return visible_request(base, view.center_rc_mm, view.zoom, view.canvas_hw)

    # -- tiers ----------------------------------------------------------------------------------------
    def begin(self) -> int:
        """A new view: renders started before it are stale from now on."""
        self.generation += 1
        return self.generation

    def is_current(self, generation: int) -> bool:
        return generation == self.generation

    def lattice_ready(self) -> bool:
        return self.lattice is not None and self.lattice.has(self.component)

    def needs_exact(self, request: ViewRequest) -> bool:
        """True when the view's pixels are finer than the lattice (or there is no lattice for this component)."""
        return not self.lattice_ready() or not self.lattice.holds(min(request.scale))  # type: ignore[union-attr]

    def fast_request(self, request: ViewRequest) -> ViewRequest:
        """``request`` with pixels no finer than half the lattice step: the cached tier holds no more detail,
        and fewer pixels keep its frame within a few milliseconds on any canvas (the display interpolates)."""
        step = self.lattice.spacing_mm / 2  # type: ignore[union-attr]
        size = (request.shape[0] * request.scale[0], request.shape[1] * request.scale[1])
        shape = tuple(max(1, min(n, int(np.ceil(extent / step)))) for n, extent in zip(request.shape, size))
        if shape == tuple(request.shape):
            return request
        scale = (size[0] / shape[0], size[1] / shape[1])
        translate = tuple(t - s0 / 2 + s1 / 2 for t, s0, s1 in zip(request.translate, request.scale, scale))
        return ViewRequest(request.plane, shape, scale, translate)  # type: ignore[arg-type]

    def fast_frame_for(self, request: ViewRequest) -> np.ndarray:
        """The cached-tier frame at :meth:`fast_request` pixels, bilinearly upsampled to ``request.shape`` (so
        that the exact frame replacing it has the same pixels and the display only swaps data)."""
        small = self.fast_request(request)
        frame = self.fast_frame(small)
        if small.shape == request.shape:
            return frame
        up = torch.nn.functional.interpolate(
            torch.from_numpy(frame)[None, None], size=tuple(request.shape), mode="bilinear", align_corners=False
        )
        return up[0, 0].numpy()

    def fast_frame(self, request: ViewRequest) -> np.ndarray:
        """The cached-tier frame of ``request`` (call only when :meth:`lattice_ready`)."""
        return self.lattice.render(request.plane, request.shape, self.component)  # type: ignore[union-attr]

    def exact_steps(self, request: ViewRequest) -> Generator[None, None, np.ndarray]:
        """The exact frame a band of rows at a time (yields between bands so a worker can stop)."""
        out = np.empty(request.shape, dtype=np.float32)
        for r0, rows in exact_blocks(self.image, request.plane, request.shape, self.component):
            out[r0 : r0 + rows.shape[0]] = rows
            yield None
        return out

    def jacobian_steps(self) -> Generator[float, None, None]:
        """Add the Jacobian to the lattice (a slab at a time)."""
        return jacobian_steps(self.image, self.lattice)

    def accept(self, generation: int, tier: str, request: ViewRequest, seconds: float) -> bool:
        """Record a finished frame; False (drop it) if it belongs to an older view or would replace exact by cached."""
        if not self.is_current(generation):
            return False
        if tier == LATTICE and self.shown is not None and self.shown.generation == generation:
            return False  # the exact frame of this view arrived first
        self.shown = Shown(tier, request, generation, seconds)
        if tier == EXACT:
            self.exact_count += 1
        else:
            self.fast_count += 1
        return True

    # -- what the user reads ----------------------------------------------------------------------------
    def display(self, frame: np.ndarray | None = None) -> Display:
        """Colour map and limits of the shown component, from the whole lattice when there is one."""
        comp = self.component
        if comp in self._display:
            return self._display[comp]
        sample = self.volume() if self.lattice_ready() else frame
        if sample is None:
            return Display("gray", (0.0, 1.0))
        result = display_for(self.image.kind, comp, sample)
        if self.lattice_ready():
            self._display[comp] = result
        return result

    def status(self) -> str:
        """Which tier is on screen, its pixel size, and how long it took."""
        if self.image is None:
            return "open a .inr checkpoint (drag and drop) or File > Open Sample > medinr INR viewer"
        lines = [self.image.describe()]
        if self.lattice is None:
            lines.append("cached lattice: building in the background...")
        else:
            lat = self.lattice
            lines.append(f"cached lattice: {'x'.join(map(str, lat.geometry.shape))} at {lat.spacing_mm:.3g} mm")
        if self.shown is not None:
            s = self.shown
            tier = "exact (network at every pixel)" if s.tier == EXACT else "cached lattice (interpolated)"
            dr = min(s.request.scale)
            lines.append(f"on screen: {tier}, pixels of {dr:.3g} mm, {s.seconds * 1000:.0f} ms")
        return "\n".join(lines)

    def cursor(self, rc_mm: tuple[float, float], values: np.ndarray | None = None) -> str:
        """RAS position (mm) under a cursor at plane mm ``rc_mm`` and the value shown there."""
        if self.image is None:
            return ""
        world = ras_of(self.base_plane(), rc_mm)
        text = "RAS (" + ", ".join(f"{v:.1f}" for v in world) + ") mm"
        if values is not None and self.shown is not None:
            req = self.shown.request
            r = int(np.floor((rc_mm[0] - req.translate[0]) / req.scale[0] + 0.5))
            c = int(np.floor((rc_mm[1] - req.translate[1]) / req.scale[1] + 0.5))
            if 0 <= r < values.shape[0] and 0 <= c < values.shape[1]:
                text += f"  {self.controls.component}: {values[r, c]:.4g}"
        return text


def ras_of(base: Plane, rc_mm: tuple[float, float]) -> np.ndarray:
    """World mm of a point given in plane mm from ``base``'s top-left corner."""
    corner = base.centre - base.fov_mm[0] / 2 * base.row_axis - base.fov_mm[1] / 2 * base.col_axis
    return corner + float(rc_mm[0]) * base.row_axis + float(rc_mm[1]) * base.col_axis


def display_for(kind: str, component: str | int, values: np.ndarray) -> Display:
    """Colour map and limits that suit a quantity: grey intensities, diverging signed values, cyclic phase.

    Limits come from robust percentiles of ``values``; a Jacobian is centred on 1 and a displacement component
    on 0 (symmetric limits), so that expansion and compression read as the two ends of one scale.
    """
    # percentiles of a regular subsample (<= ~130k values): the main thread must not sort a whole lattice
    stride = max(1, int(np.ceil((values.size / (1 << 17)) ** (1 / max(1, values.ndim)))))
    values = values[(slice(None, None, stride),) * values.ndim]
    finite = values[np.isfinite(values)]
    if component == "phase":
        return Display("twilight", (-float(np.pi), float(np.pi)))
    if finite.size == 0:
        return Display("gray", (0.0, 1.0))
    if component == "jacobian":
        half = max(float(np.percentile(np.abs(finite - 1.0), 99.5)), 1e-3)
        return Display("PiYG", (1.0 - half, 1.0 + half))
    if kind == "displacement" and isinstance(component, int):
        half = max(float(np.percentile(np.abs(finite), 99.5)), 1e-3)
        return Display("bwr", (-half, half))
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1.0
    return Display("magma" if kind == "displacement" else "gray", (lo, hi))


def timed(steps: Generator[Any, None, Any]) -> Generator[Any, None, tuple[Any, float]]:
    """Run a step generator, passing its steps on, and return ``(value, seconds)``."""
    start = time.perf_counter()
    value = yield from steps
    return value, time.perf_counter() - start
