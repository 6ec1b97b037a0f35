"""The canvas side of the slicer: camera and zoom box, the cursor read-out, mouse gestures, orientation labels.

Gestures (2D): Shift-drag moves the plane under the pointer along its normal (the offset, or in linked views that
view's crosshair coordinate); Ctrl-drag tilts the single view; a click without a drag puts the crosshair of the
linked views where it lands. In 3D, Shift-drag is napari's own drag of the plane (the offset box follows it).
Orientation labels are four canvas overlays at the edges, so they stay put while the camera pans and zooms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from napari_plugin._orientation import AXIS_LETTERS, SIDES
from napari_plugin._slicer_model import SlicerModel, ViewState
from napari_plugin._viewport import extent, fit_zoom

#: Degrees of tilt and millimetres of offset per screen pixel of a Ctrl-/Shift-drag.
DRAG_DEG_PER_PX, DRAG_MM_PER_PX = 0.25, 0.25
LABEL_COLOR = "#ffd400"
#: Every letter an edge label can hold, and how long the transparent warm-up labels stay (see
#: :meth:`CanvasView._add_labels`).
WARM_UP_TEXT, WARM_UP_MS = "".join(letter for pair in AXIS_LETTERS for letter in pair), 1500


def label_key(side: str) -> str:
    """Name of the canvas overlay of a screen edge's orientation label."""
    return f"medinr {side}"


class CanvasView(QObject):
    """Connects one slicer to napari's camera, cursor, mouse and canvas overlays."""

    changed = Signal()  # the visible region changed: draw again

    def __init__(self, viewer: Any, model: SlicerModel, zoom_box: Any, parent: QObject) -> None:
        super().__init__(parent)
        self.viewer, self.model, self.zoom_box = viewer, model, zoom_box
        self._connections: list[tuple[Any, Any]] = []
        self.mode: int | None = None  # the display mode the slicer's layers are set up for (the widget sets it)
        self._fitted = False  # the camera shows the views whole, as fit() left it: a resized canvas refits
        self._fitting = False
        self._add_labels()

    @property
    def camera(self) -> Any:
        return self.viewer.scene.camera

    def canvas_size(self) -> tuple[int, int]:
        h, w = self.viewer.canvas.size
        return int(h), int(w)

    def view_state(self) -> ViewState | None:
        """The 2D camera (None in 3D, and while the slicer's layers are still those of the other mode)."""
        if self.viewer.dims.ndisplay != 2 or self.mode != 2:
            return None
        center = tuple(float(c) for c in self.camera.center[-2:])
        return ViewState(center, float(self.camera.zoom), self.canvas_size())  # type: ignore[arg-type]

    # -- wiring ----------------------------------------------------------------------------------------------
    def connect(self) -> None:
        for emitter, callback in (
            (self.camera.events.zoom, self._on_camera_zoom),
            (self.camera.events.center, self._on_camera_center),
            (self.viewer.canvas.events.size, self._on_canvas_size),
            (self.viewer.cursor.events.position, self._on_cursor),
        ):
            emitter.connect(callback)
            self._connections.append((emitter, callback))
        self.viewer.mouse_drag_callbacks.append(self.on_drag)
        self.zoom_box.valueChanged.connect(self._on_zoom_box)

    def disconnect(self) -> None:
        for emitter, callback in self._connections:
            emitter.disconnect(callback)
        self._connections = []
        if self.on_drag in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self.on_drag)
        self._warm_up.stop()
        for side in SIDES:
            self.viewer.canvas.overlays.pop(label_key(side), None)

    def _emit_changed(self, event: Any = None) -> None:
        if self.model.image is not None and not self._fitting:
            self.changed.emit()

    # -- camera and zoom box ---------------------------------------------------------------------------------
    def fit(self) -> None:
        """Show every view whole (zoom box back to 1x)."""
        if self.model.image is None or self.viewer.dims.ndisplay != 2:
            return
        tiles = self.model.tiles()
        r0, c0, r1, c1 = extent(tiles)
        center = list(self.camera.center)
        center[-2:] = [(r0 + r1) / 2, (c0 + c1) / 2]
        self._fitting = True
        try:
            self.camera.center = tuple(center)
            self.camera.zoom = fit_zoom(tiles, self.canvas_size())
        finally:
            self._fitting = False
        self._fitted = True
        self._set_zoom_box(1.0)
        self.changed.emit()  # once, for the whole move

    def _on_camera_center(self, event: Any = None) -> None:
        self._fitted = self._fitted and self._fitting
        self._emit_changed()

    def _on_canvas_size(self, event: Any = None) -> None:
        if self._fitted:
            self.fit()
        else:
            self._on_camera_zoom()

    def _fit_zoom(self) -> float:
        return fit_zoom(self.model.tiles(), self.canvas_size())

    def _on_zoom_box(self, value: float) -> None:
        if self.model.image is not None and self.viewer.dims.ndisplay == 2:
            self.camera.zoom = self._fit_zoom() * value

    def _on_camera_zoom(self, event: Any = None) -> None:
        """Keep the zoom box in step with the camera (mouse wheel, scripts)."""
        self._fitted = self._fitted and self._fitting
        if self.model.image is not None and self.viewer.dims.ndisplay == 2:
            self._set_zoom_box(self.camera.zoom / self._fit_zoom())
        self._emit_changed()

    def _set_zoom_box(self, value: float) -> None:
        self.zoom_box.blockSignals(True)
        self.zoom_box.setValue(value)
        self.zoom_box.blockSignals(False)

    # -- cursor ----------------------------------------------------------------------------------------------
    def _on_cursor(self, event: Any = None) -> None:
        """The read-out follows the cursor (in canvas mm; the model knows RAS and the value on screen)."""
        if self.model.image is None or self.viewer.dims.ndisplay != 2:
            return
        self.model.set_cursor(tuple(float(v) for v in self.viewer.cursor.position[-2:]))  # type: ignore[arg-type]

    # -- gestures --------------------------------------------------------------------------------------------
    def on_drag(self, viewer: Any, event: Any) -> Any:
        """Shift-drag: move along the normal; Ctrl-drag: tilt; click (linked views): move the crosshair."""
        model = self.model
        if model.image is None or model.image.ndim != 3 or self.viewer.dims.ndisplay != 2:
            return
        mods = {str(getattr(m, "name", m)) for m in (event.modifiers or ())}
        position = getattr(event, "position", None)
        rc = None if position is None else (float(position[-2]), float(position[-1]))
        tile = model.tile_at(rc) if rc is not None else model.tiles()[0]
        what = "offset" if "Shift" in mods else "tilt" if "Control" in mods and not model.controls.linked else None
        if what is None:
            yield from self._click(event, tile, rc)
            return
        pan, self.camera.mouse_pan = self.camera.mouse_pan, False
        start = last = np.asarray(event.pos, dtype=float)
        tilts = model.controls.tilt_deg
        yield
        while event.type == "mouse_move":
            pos = np.asarray(event.pos, dtype=float)
            if what == "offset" and tile is not None:
                model.move_along_normal(tile.key, -(pos[1] - last[1]) * DRAG_MM_PER_PX)
            elif what == "tilt":
                dx, dy = pos - start
                model.update(tilt_deg=(tilts[0] + dy * DRAG_DEG_PER_PX, tilts[1] + dx * DRAG_DEG_PER_PX))
            last = pos
            yield
        self.camera.mouse_pan = pan

    def _click(self, event: Any, tile: Any, rc: tuple[float, float] | None) -> Any:
        """A press and release without a move, in linked views: the crosshair goes there."""
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved and rc is not None and tile is not None and self.model.controls.linked:
            self.model.set_crosshair(tile.world(rc))

    # -- orientation labels ----------------------------------------------------------------------------------
    def _add_labels(self) -> None:
        """The four edge labels, drawn once while the slicer docks: every letter, fully transparent, for
        :data:`WARM_UP_MS`. A text overlay's first draw compiles its shader and rasterises its glyphs (0.3 s with
        a software OpenGL driver), which would otherwise fall on the first checkpoint's opening."""
        from napari.components.overlays import TextOverlay

        positions = {"top": "top_center", "bottom": "bottom_center", "left": "middle_left", "right": "middle_right"}
        for side in SIDES:
            overlay = TextOverlay(text=WARM_UP_TEXT, position=positions[side], color=LABEL_COLOR, font_size=14,
                                  visible=True, opacity=0.0)
            self.viewer.canvas.overlays[label_key(side)] = overlay
        self._warm_up = QTimer(self)
        self._warm_up.setSingleShot(True)
        self._warm_up.timeout.connect(self.update_labels)
        self._warm_up.start(WARM_UP_MS)

    def end_warm_up(self) -> None:
        """Hide the warm-up letters now (a checkpoint is being opened): drawn while napari sets up the view's
        layer, they would be drawn again, shaders rebuilt, in that stretch's paint (25-45 ms)."""
        if self._warm_up.isActive():
            self._warm_up.stop()
            self.update_labels()

    def update_labels(self) -> None:
        """The patient side each screen edge faces (single 2D view of a 3D image; hidden otherwise)."""
        if label_key(SIDES[0]) not in self.viewer.canvas.overlays:
            return  # disconnected: a deferred call (the widget's 1 ms timer) came after its overlays went
        labels = None
        if self.model.image is not None and self.viewer.dims.ndisplay == 2:
            labels = self.model.edge_labels()
        if not labels and self._warm_up.isActive():
            return  # still drawing the transparent warm-up letters
        for side in SIDES:
            overlay = self.viewer.canvas.overlays[label_key(side)]
            overlay.text = labels[side] if labels else ""
            overlay.visible = bool(labels)
            overlay.opacity = 1.0
