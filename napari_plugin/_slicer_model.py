"""The slicer's state without Qt: image, plane controls, views, what is on screen, the window, the read-out.

The Qt views (``napari_plugin/_qt``) turn user input into calls here and draw what the model's events announce,
as napari-animation splits its model from its widgets; everything that decides *what* is drawn lives here and is
tested without a viewer. The controls only ever hold a valid state: a change that makes no plane (a zero normal)
is refused as a whole, announced on ``events.error`` and leaves the views as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.render import CachedLattice, Plane, components_of, default_plane, resolve_component
from napari_plugin import _readout
from napari_plugin._orientation import edge_labels
from napari_plugin._tiers import FrameLog, Shown
from napari_plugin._viewport import (
    LINKED,
    MAIN,
    Tile,
    ViewRequest,
    label_points,
    side_by_side,
    visible_request,
)
from napari_plugin._window import Display, WindowLevel


class SlicerEvents(SignalGroup):
    image = Signal()  # another image (or none)
    views = Signal(bool)  # the planes or their layout changed: draw again (True: fit the camera to them)
    display = Signal()  # colour map or window changed
    error = Signal(str)  # a change was refused ('' once the controls are valid again)
    frame = Signal(str)  # a frame of view KEY is on screen
    cursor = Signal(str)  # the read-out under the cursor


@dataclass(frozen=True)
class PlaneControls:
    """What the controls say: a preset or a normal, two tilts (deg), an offset (mm), a component, the screen
    convention, whether the three orthogonal views are linked and whether a field's deformed grid is drawn."""

    preset: str = "axial"
    normal: str = ""
    tilt_deg: tuple[float, float] = (0.0, 0.0)
    offset_mm: float = 0.0
    component: str = "auto"
    convention: str = "neurological"
    linked: bool = False
    grid: bool = False


@dataclass(frozen=True)
class ViewState:
    """What the 2D camera shows: centre (canvas mm), zoom (screen px per mm), canvas size (h, w) in pixels."""

    center_rc_mm: tuple[float, float]
    zoom: float
    canvas_hw: tuple[int, int]


class SlicerModel:
    """State of one slicer (see the module docstring)."""

    def __init__(self) -> None:
        self.events = SlicerEvents()
        self.image: ContinuousImage | None = None
        self.lattice: CachedLattice | None = None
        self.controls = PlaneControls()
        self.crosshair: np.ndarray | None = None  # world mm where the linked views meet
        self.log = FrameLog()
        self.window = WindowLevel()
        self.error: str | None = None
        self.cursor_rc: tuple[float, float] | None = None
        self.revision = 0  # counts changes of what the views show (image, lattice, planes, component)
        self._volumes: dict[Any, np.ndarray] = {}
        self._tiles: tuple[Any, list[Tile]] | None = None  # the last layout of this image and its controls

    # -- image ---------------------------------------------------------------------------------------------
    def set_image(self, image: ContinuousImage | None, lattice: CachedLattice | None = None) -> None:
        """Slice ``image``: the plane controls are kept (valid for any 3D image), the component is its default."""
        self.image, self.lattice, self.crosshair = image, lattice, None
        self._tiles = None
        self.revision += 1
        self._volumes.clear()
        self.window.reset()
        self.log.reset()
        if image is not None:
            grid = self.controls.grid and image.kind == "displacement"
            self.controls = replace(self.controls, component=components_of(image)[0], grid=grid)
            if not self._valid(self.controls, None):
                self.controls = replace(PlaneControls(), component=self.controls.component)
            if self.controls.linked and image.ndim == 3:
                self.crosshair = self.base_plane().centre
            self.window.select(self.component)
        self.error = None
        self.events.image.emit()

    def set_lattice(self, lattice: CachedLattice) -> None:
        self.lattice = lattice
        self.revision += 1
        self._volumes.clear()

    @property
    def component(self) -> str | int:
        return resolve_component(self.image, self.controls.component)

    # -- controls ------------------------------------------------------------------------------------------
    def update(self, **changes: Any) -> bool:
        """Change controls; a preset replaces a typed normal. Refused as a whole (False) if no plane results."""
        new = replace(self.controls, **changes)
        if "preset" in changes and "normal" not in changes:
            new = replace(new, normal="")
        crosshair = self.crosshair
        if new.linked and crosshair is None and self.image is not None and self.image.ndim == 3:
            crosshair = self.base_plane(new).centre  # the views meet where the single view was
        if not self._valid(new, crosshair):
            return False
        old = self.controls
        self.controls, self.crosshair = new, crosshair
        self.revision += 1
        if new.linked != old.linked:
            self.log.reset()
        if new.component != old.component and self.window.select(self.component):
            self.events.display.emit()
        refit = any(getattr(new, k) != getattr(old, k) for k in ("preset", "normal", "convention", "linked"))
        self.events.views.emit(refit)
        return True

    def _valid(self, controls: PlaneControls, crosshair: np.ndarray | None) -> bool:
        if self.image is None:
            return True
        try:
            resolve_component(self.image, controls.component)
            self.tiles(controls, crosshair)
        except MedinrError as exc:
            self.error = str(exc)
            self.events.error.emit(self.error)
            return False
        if self.error is not None:
            self.error = None
            self.events.error.emit("")
        return True

    def set_crosshair(self, world: np.ndarray) -> None:
        """Move the point where the linked views meet (world mm)."""
        self.crosshair = np.asarray(world, dtype=np.float64)
        self.revision += 1
        self.events.views.emit(False)

    def move_along_normal(self, key: str, mm: float) -> None:
        """Shift view ``key`` along its normal: the offset of the single view, the crosshair of linked ones."""
        if key == MAIN:
            self.update(offset_mm=self.controls.offset_mm + mm)
        elif self.crosshair is not None:
            self.set_crosshair(self.crosshair + mm * self.tile(key).plane.normal)

    # -- views ---------------------------------------------------------------------------------------------
    def base_plane(self, controls: PlaneControls | None = None) -> Plane:
        """The whole slice of the single view (a 2D image shows its own plane)."""
        image, c = self.image, controls or self.controls
        if image.ndim == 2:
            return default_plane(image)
        return default_plane(image, c.normal.strip() or c.preset, c.offset_mm, c.tilt_deg, c.convention)

    def tiles(self, controls: PlaneControls | None = None, crosshair: np.ndarray | None = None) -> list[Tile]:
        """The views on the canvas: the single view, or axial, coronal and sagittal through the crosshair."""
        c = controls or self.controls
        point = self.crosshair if controls is None else crosshair
        # one change asks for its layout several times (validation, requests, labels, overlays): 0.5 ms each
        key = (c, None if point is None else tuple(np.asarray(point, dtype=np.float64).tolist()))
        if self._tiles is not None and self._tiles[0] == key:
            return list(self._tiles[1])
        if not c.linked or self.image.ndim != 3 or point is None:
            tiles = [Tile(MAIN, self.base_plane(c))]
        else:
            planes = []
            for name in LINKED:
                plane = default_plane(self.image, name, 0.0, (0.0, 0.0), c.convention)
                planes.append((name, plane.shifted(float((point - plane.centre) @ plane.normal))))
            tiles = side_by_side(planes)
        self._tiles = (key, tiles)
        return list(tiles)

    def tile(self, key: str) -> Tile:
        return next(t for t in self.tiles() if t.key == key)

    def tile_at(self, rc: tuple[float, float]) -> Tile | None:
        """The view under canvas point ``rc`` (the single view wherever the point is)."""
        tiles = self.tiles()
        if len(tiles) == 1:
            return tiles[0]
        return next((t for t in tiles if t.contains(rc)), None)

    def requests(self, view: ViewState) -> list[ViewRequest]:
        """The visible part of every view at screen resolution."""
        found = (visible_request(t, view.center_rc_mm, view.zoom, view.canvas_hw) for t in self.tiles())
        return [r for r in found if r is not None]

    def edge_labels(self) -> dict[str, str] | None:
        """Orientation letters of the single view's screen edges (None: linked views or a 2D image)."""
        tiles = self.tiles()
        return edge_labels(tiles[0].plane) if len(tiles) == 1 else None

    def tile_labels(self) -> tuple[list, list]:
        """Orientation letters inside the edges of each linked view: (canvas mm points, letters)."""
        tiles = self.tiles()
        return label_points(tiles, [edge_labels(t.plane) for t in tiles]) if len(tiles) > 1 else ([], [])

    # -- tiers ---------------------------------------------------------------------------------------------
    @property
    def shown(self) -> Shown | None:
        """The frame on screen in the single view."""
        return self.log.shown.get(MAIN)

    def shown_request(self, key: str = MAIN) -> ViewRequest | None:
        shown = self.log.shown.get(key)
        return None if shown is None else shown.request

    @property
    def exact_count(self) -> int:
        return self.log.exact_count

    @property
    def fast_count(self) -> int:
        return self.log.fast_count

    def lattice_ready(self) -> bool:
        return self.lattice is not None and self.lattice.has(self.component)

    def needs_exact(self, request: ViewRequest) -> bool:
        """True when the view's pixels are finer than the lattice (or there is no lattice for this component)."""
        return not self.lattice_ready() or not self.lattice.holds(min(request.scale))  # type: ignore[union-attr]

    def volume(self, component: str | int | None = None) -> np.ndarray:
        """The lattice as one volume of ``component`` (default: the shown one), computed once per component and
        lattice; call it in a worker."""
        comp = self.component if component is None else component
        if comp not in self._volumes:
            self._volumes[comp] = np.ascontiguousarray(self.lattice.volume(comp))  # type: ignore[union-attr]
        return self._volumes[comp]

    def accept(self, generation: int, tier: str, request: ViewRequest, frame: np.ndarray, seconds: float) -> bool:
        """Record a finished frame (see :class:`FrameLog`); the read-out follows the frame on screen."""
        if not self.log.accept(generation, tier, request, frame, seconds):
            return False
        self.events.frame.emit(request.key)
        self._emit_cursor()
        return True

    # -- window --------------------------------------------------------------------------------------------
    def learn_display(self, component: Any, display: Display) -> None:
        if self.window.learn(component, display):
            self.events.display.emit()

    def choose_window(self, name: str) -> None:
        if self.window.choose(name):
            self.events.display.emit()

    def set_window(self, limits: tuple[float, float]) -> None:
        if self.window.set_limits(limits):
            self.events.display.emit()

    # -- read-out ------------------------------------------------------------------------------------------
    def set_cursor(self, rc: tuple[float, float] | None) -> None:
        """The cursor is at canvas point ``rc`` (None: off the canvas or in 3D)."""
        self.cursor_rc = rc
        self._emit_cursor()

    def cursor_text(self) -> str:
        return _readout.cursor_text(self)

    def status(self) -> str:
        return _readout.status_text(self)

    def _emit_cursor(self) -> None:
        if self.cursor_rc is not None:
            self.events.cursor.emit(self.cursor_text())
