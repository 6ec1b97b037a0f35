"""The slicing dock widget: controls only; the state lives in :class:`~napari_plugin._slicer_model.SlicerModel`.

Every view is drawn twice: first from the checkpoint's cached lattice (interpolated, a few ms whatever the model
family), then by the network itself (the exact tier) as soon as the view needs finer pixels than the lattice
holds, or after :data:`IDLE_MS` of quiet. Both run in napari ``thread_worker`` threads (torch releases the GIL),
results of superseded views are dropped by the model's generation counter, and layers are only touched here on
the main thread. In 2D the checkpoint's own volume layer is set aside (it lives in RAS mm, the slice in plane
mm), so no second copy and no dims slider remain; in 3D the lattice is volume-rendered with the current plane in
place. Shift-drag moves the plane along its normal, Ctrl-drag tilts it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QThreadPool, QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QWidget

from medinr.errors import MedinrError
from medinr.render import PLANE_PRESETS, components_of, deformed_grid, slice_geometry
from napari_plugin import _lattices
from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY, ROLE_KEY
from napari_plugin._slicer_model import EXACT, LATTICE, SlicerModel, ViewState, timed
from napari_plugin._viewport import ViewRequest, fit_zoom

if TYPE_CHECKING:
    import napari

#: Quiet time after the last camera or control event before a view is drawn, ms.
DEBOUNCE_MS = 30
#: Longest a stream of events may defer a draw, ms (a drag still gets about ten frames a second).
MAX_DEFER_MS = 100
#: Quiet time after a cached frame before the exact frame replaces it (when the lattice holds the view), ms.
IDLE_MS = 400
#: Degrees of tilt and millimetres of offset per screen pixel of a Ctrl-/Shift-drag.
DRAG_DEG_PER_PX, DRAG_MM_PER_PX = 0.25, 0.25

SLICE_LAYER = "medinr slice"
CONTEXT_LAYER = "medinr plane 3D"
VOLUME_LAYER = "medinr volume 3D"
GRID_LAYER = "medinr deformed grid"
OWN_LAYERS = (SLICE_LAYER, CONTEXT_LAYER, VOLUME_LAYER, GRID_LAYER)


class SliceWidget(QWidget):
    """Dock widget: choose a checkpoint, a plane (preset, normal, tilt, offset), a zoom and what to show."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = SlicerModel()
        self.last_error: str | None = None
        self._parked: list[Any] = []  # the checkpoint's own layers, set aside while the slicer shows it
        self._workers: list[tuple[Any, threading.Event]] = []
        self._pools = [_pool(self) for _ in range(3)]  # cached frames, exact frames, lattice additions
        self._closed = False
        self._hidden = False  # hidden or closing with the viewer: late results are dropped, nothing touches Qt
        self._connections: list[tuple[Any, Any]] = []
        self._jacobian_building = False
        self._display_key: Any = None
        self._busy = False  # True while the widget itself adds or removes layers
        self._pending_since = 0.0
        self._build_controls()
        self._debounce = _single_shot(self, DEBOUNCE_MS, self._render)
        # deferred work on timers owned by the widget: they die with it (a bare singleShot would outlive it)
        self._select: Any = None
        self._refresh_timer = _single_shot(self, 0, self._deferred_refresh)
        self._mode_timer = _single_shot(self, 0, lambda: self._enter_mode(fit=True))
        self._idle = _single_shot(self, IDLE_MS, self._render_exact_idle)
        self._connect_viewer()
        self._refresh_sources()

    # -- construction -----------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        form = QFormLayout(self)
        self.source = QComboBox()
        self.preset = QComboBox()
        self.preset.addItems(list(PLANE_PRESETS))
        self.normal = QLineEdit()
        self.normal.setPlaceholderText("NX,NY,NZ (overrides the preset)")
        self.tilt_col = _spin(-90, 90, 0.0, 1.0, " deg")
        self.tilt_row = _spin(-90, 90, 0.0, 1.0, " deg")
        self.offset = _spin(-1000, 1000, 0.0, 1.0, " mm")
        self.zoom = _spin(0.05, 200, 1.0, 0.25, "x")
        self.component = QComboBox()
        self.grid = QCheckBox("deformed grid (registration)")
        self.tier = QLabel("")
        self.tier.setWordWrap(True)
        self.cursor = QLabel("")
        self.status = QLabel(self.model.status())
        for label in (self.status, self.cursor):
            label.setWordWrap(True)
        rows = [
            ("checkpoint", self.source),
            ("plane", self.preset),
            ("normal", self.normal),
            ("tilt about columns", self.tilt_col),
            ("tilt about rows", self.tilt_row),
            ("offset", self.offset),
            ("zoom", self.zoom),
            ("show", self.component),
        ]
        for name, w in rows:
            form.addRow(name, w)
        for w in (self.grid, self.tier, self.cursor, self.status):
            form.addRow(w)
        self.source.currentIndexChanged.connect(self._on_source)
        self.preset.currentIndexChanged.connect(self._on_plane_changed)
        self.normal.editingFinished.connect(self._on_plane_changed)
        for spin in (self.tilt_col, self.tilt_row, self.offset):
            spin.valueChanged.connect(self._on_plane_changed)
        self.zoom.valueChanged.connect(self._on_zoom_spin)
        self.component.currentIndexChanged.connect(self._on_plane_changed)
        self.grid.toggled.connect(self._on_plane_changed)

    def _connect(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _connect_viewer(self) -> None:
        cam = self.camera
        self._connect(cam.events.zoom, self._on_camera_zoom)
        self._connect(cam.events.center, self._schedule)
        self._connect(self.viewer.canvas.events.size, self._on_camera_zoom)  # the zoom box is relative to the canvas
        self._connect(self.viewer.dims.events.ndisplay, self._on_ndisplay)
        self._connect(self.viewer.layers.events.inserted, self._on_layers_changed)
        self._connect(self.viewer.layers.events.removed, self._on_layers_changed)
        self._connect(self.viewer.cursor.events.position, self._on_cursor)
        self.viewer.mouse_drag_callbacks.append(self._on_drag)

    # -- viewer access ------------------------------------------------------------------------------------
    @property
    def camera(self) -> Any:
        return self.viewer.scene.camera

    def canvas_size(self) -> tuple[int, int]:
        """Canvas size in screen pixels (h, w)."""
        h, w = self.viewer.canvas.size
        return int(h), int(w)

    def view_state(self) -> ViewState:
        cam = self.camera
        center = tuple(float(c) for c in cam.center[-2:])
        return ViewState(self.viewer.dims.ndisplay, center, float(cam.zoom), self.canvas_size())

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _remove(self, name: str) -> None:
        if (layer := self._layer(name)) is not None:
            self._busy = True
            try:
                self.viewer.layers.remove(layer)
            finally:
                self._busy = False

    # -- sources -------------------------------------------------------------------------------------------
    def _sources(self) -> list[Any]:
        live = [
            lyr
            for lyr in self.viewer.layers
            if CHECKPOINT_KEY in lyr.metadata and lyr.metadata.get(ROLE_KEY) == "volume"
        ]
        return [lyr for lyr in self._parked if lyr not in live] + live

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._busy or self._hidden or self._closed:
            return
        value = getattr(event, "value", None)
        if value is not None and event.type == "inserted" and CHECKPOINT_KEY in getattr(value, "metadata", {}):
            self._select = value
        self._refresh_timer.start()  # after napari has finished adding the layer (it may be parked right away)

    def _deferred_refresh(self) -> None:
        select, self._select = self._select, None
        self._refresh_sources(select=select)

    def _refresh_sources(self, select: Any = None) -> None:
        layers = self._sources()
        names = [lyr.name for lyr in layers]
        current = select.name if select is not None and select in layers else self.source.currentText()
        if names != [self.source.itemText(i) for i in range(self.source.count())]:
            self.source.blockSignals(True)
            self.source.clear()
            self.source.addItems(names)
            self.source.blockSignals(False)
        if current in names:
            self.source.setCurrentIndex(names.index(current))
        if self.source.currentText() and (select is not None or self.model.image is None):
            self._on_source()

    def _on_source(self, index: int = 0) -> None:
        layers = {lyr.name: lyr for lyr in self._sources()}
        layer = layers.get(self.source.currentText())
        if layer is not None:
            self.set_checkpoint(layer.metadata[CHECKPOINT_KEY], layer.metadata.get("medinr_path"))

    def set_checkpoint(self, image: Any, path: str | None = None) -> None:
        """Slice ``image`` (a ContinuousImage): the plane is reset, the view fitted and its lattice asked for."""
        if image is self.model.image:
            return
        self._cancel_all(wait=False)
        self._restore_parked()
        self.model.set_image(image, _lattices.current(image))  # a preview lattice serves until the full one is in
        if not _lattices.is_final(image):
            _lattices.listen(image, self._on_lattice)
            _lattices.ensure(image, path)
        self._jacobian_building = False
        self._display_key = None
        self.component.blockSignals(True)
        self.component.clear()
        self.component.addItems(components_of(image))
        self.component.blockSignals(False)
        for w in (self.preset, self.normal, self.tilt_col, self.tilt_row, self.offset):
            w.setEnabled(image.ndim == 3)
        self.grid.setEnabled(image.kind == "displacement")
        self._park(image)
        self._enter_mode(fit=True)

    def _on_lattice(self, image: Any, lattice: Any) -> None:
        if image is self.model.image and not self._closed:
            self.model.set_lattice(lattice)
            self._display_key = None
            if self._hidden:
                return
            if self.viewer.dims.ndisplay == 3:
                self._show_volume()
            self._schedule()

    # -- modes and layers ----------------------------------------------------------------------------------
    def _park(self, image: Any) -> None:
        """Set the checkpoint's own layers aside: the slicer shows it in its own layers."""
        for lyr in list(self.viewer.layers):
            if lyr.metadata.get(CHECKPOINT_KEY) is image and lyr.name not in OWN_LAYERS:
                self._busy = True
                try:
                    self.viewer.layers.remove(lyr)
                finally:
                    self._busy = False
                self._parked.append(lyr)

    def _restore_parked(self) -> None:
        self._busy = True
        try:
            for lyr in self._parked:
                if lyr not in self.viewer.layers:
                    self.viewer.layers.append(lyr)
        finally:
            self._busy = False
        self._parked = []

    def _enter_mode(self, fit: bool = False) -> None:
        if self.model.image is None:
            return
        if self.viewer.dims.ndisplay == 2:
            for name in (CONTEXT_LAYER, VOLUME_LAYER):  # a tilted 3D layer has a singular 2D sub-affine
                self._remove(name)
            if self._layer(SLICE_LAYER) is None:
                self._add_image(np.zeros((2, 2), np.float32), name=SLICE_LAYER, units=("mm", "mm"))
            if fit:
                self._fit_camera()
        else:
            for name in (SLICE_LAYER, GRID_LAYER):
                self._remove(name)
            self._show_volume()
            self.viewer.reset_view()
        self._schedule()

    def _add_image(self, data: np.ndarray, **kwargs: Any) -> Any:
        self._busy = True
        try:
            return self.viewer.add_image(data, **kwargs)
        finally:
            self._busy = False

    def _show_volume(self) -> None:
        """3D view: the cached lattice volume-rendered, and the current plane in place (napari's plane depiction
        of the same lattice, drawn on the GPU; shift-drag in the canvas moves it, and the offset box follows)."""
        model = self.model
        if not model.lattice_ready():
            return
        lattice, shown = model.lattice, model.display()
        volume = model.volume()
        plane = self._plane_in_data(model.base_plane())
        common = {"affine": lattice.geometry.affine, "units": ("mm",) * 3}
        layers = []
        for name, extra in (
            (VOLUME_LAYER, {"rendering": "attenuated_mip", "opacity": 0.5}),
            (CONTEXT_LAYER, {"depiction": "plane", "plane": plane, "blending": "translucent"}),
        ):
            layer = self._layer(name)
            if layer is None:
                layer = self._add_image(volume, name=name, **common, **extra)
                if name == CONTEXT_LAYER:
                    self._connect(layer.plane.events.position, self._on_plane_dragged)
            elif layer.data is not volume:
                layer.data = volume
            layers.append(layer)
        self._busy = True
        try:
            layers[1].plane.position, layers[1].plane.normal = plane["position"], plane["normal"]
        finally:
            self._busy = False
        for layer in layers:
            layer.colormap, layer.contrast_limits = shown.colormap, shown.contrast_limits
        self.tier.setText("on screen: cached lattice (volume rendering and the plane in place)")

    def _plane_in_data(self, base: Any) -> dict:
        """Position and normal of ``base`` in the lattice layer's data (voxel) coordinates."""
        affine = self.model.lattice.geometry.affine
        position = np.linalg.solve(affine[:3, :3], base.centre - affine[:3, 3])
        normal = affine[:3, :3].T @ base.normal  # normals transform by the transposed linear part
        return {"position": tuple(position), "normal": tuple(normal / np.linalg.norm(normal)), "thickness": 1.0}

    def _on_plane_dragged(self, event: Any = None) -> None:
        """The plane was moved in the 3D canvas: the offset box takes the move along the normal."""
        layer = self._layer(CONTEXT_LAYER)
        if self._busy or layer is None or self.model.image is None:
            return
        base = self.model.base_plane()
        affine = self.model.lattice.geometry.affine
        world = affine[:3, :3] @ np.asarray(layer.plane.position) + affine[:3, 3]
        self.offset.setValue(self.offset.value() + float((world - base.centre) @ base.normal))

    def _fit_camera(self) -> None:
        """Show the whole plane (zoom box back to 1x)."""
        base = self.model.base_plane()
        center = list(self.camera.center)
        center[-2:] = [base.fov_mm[0] / 2, base.fov_mm[1] / 2]
        self.camera.center = tuple(center)
        self.zoom.blockSignals(True)
        self.zoom.setValue(1.0)
        self.zoom.blockSignals(False)
        self.camera.zoom = fit_zoom(base, self.canvas_size())

    # -- control events --------------------------------------------------------------------------------------
    def _on_plane_changed(self, *args: Any) -> None:
        if self.model.image is None:
            return
        old = self.model.base_plane()
        self.model.update(
            preset=self.preset.currentText(),
            normal=self.normal.text(),
            tilt_deg=(self.tilt_col.value(), self.tilt_row.value()),
            offset_mm=self.offset.value(),
            component=self.component.currentText() or "auto",
        )
        try:
            base = self.model.base_plane()
        except MedinrError as exc:
            self._show_error(str(exc))
            return
        if self.viewer.dims.ndisplay == 3:
            self._show_volume()
        elif not np.allclose(base.fov_mm, old.fov_mm):
            self._fit_camera()
        self._schedule()

    def _on_zoom_spin(self, value: float) -> None:
        if self.model.image is not None and self.viewer.dims.ndisplay == 2:
            self.camera.zoom = fit_zoom(self.model.base_plane(), self.canvas_size()) * value

    def _on_camera_zoom(self, event: Any = None) -> None:
        """Keep the zoom box in step with the camera (mouse wheel, scripts)."""
        if self.model.image is not None and self.viewer.dims.ndisplay == 2:
            factor = self.camera.zoom / fit_zoom(self.model.base_plane(), self.canvas_size())
            self.zoom.blockSignals(True)
            self.zoom.setValue(factor)
            self.zoom.blockSignals(False)
        self._schedule()

    def _on_ndisplay(self, event: Any = None) -> None:
        # after napari has finished switching: changing layers inside its ndisplay event breaks its dims widget
        self._cancel_all(wait=False)
        self._mode_timer.start()

    def _on_cursor(self, event: Any = None) -> None:
        """The cursor in RAS mm and the value under it (napari itself knows only plane mm)."""
        layer = self._layer(SLICE_LAYER)
        if self.model.image is None or self.viewer.dims.ndisplay != 2 or layer is None:
            return
        rc = tuple(float(v) for v in self.viewer.cursor.position[-2:])
        text = self.model.cursor(rc, np.asarray(layer.data))
        self.cursor.setText(text)
        self.viewer.help = text

    def _on_drag(self, viewer: Any, event: Any) -> Any:
        """Shift-drag (2D): move the plane along its normal; Ctrl-drag: tilt it (3D checkpoints)."""
        mods = {str(getattr(m, "name", m)) for m in (event.modifiers or ())}
        # in 3D, Shift-drag is napari's own drag of the plane layer (the offset box follows it)
        two_d = self.viewer.dims.ndisplay == 2
        what = "offset" if "Shift" in mods and two_d else "tilt" if "Control" in mods else None
        if what is None or self.model.image is None or self.model.image.ndim != 3:
            return
        pan = self.camera.mouse_pan
        self.camera.mouse_pan = False
        start = np.asarray(event.pos, dtype=float)
        values = (self.offset.value(), self.tilt_col.value(), self.tilt_row.value())
        yield
        while event.type == "mouse_move":
            dx, dy = np.asarray(event.pos, dtype=float) - start
            if what == "offset":
                self.offset.setValue(values[0] - dy * DRAG_MM_PER_PX)
            else:
                self.tilt_col.setValue(values[1] + dy * DRAG_DEG_PER_PX)
                self.tilt_row.setValue(values[2] + dx * DRAG_DEG_PER_PX)
            yield
        self.camera.mouse_pan = pan

    # -- rendering -------------------------------------------------------------------------------------------
    def _schedule(self, event: Any = None) -> None:
        """Draw soon: after DEBOUNCE_MS of quiet, but at least every MAX_DEFER_MS while events keep coming."""
        if self.model.image is None:
            return
        self._idle.stop()
        now = time.monotonic()
        if not self._debounce.isActive():
            self._pending_since = now
        elif (now - self._pending_since) * 1000 > MAX_DEFER_MS:
            return  # a drag or a camera animation: let the running timer fire
        self._debounce.start()

    def current_request(self) -> ViewRequest:
        """What a render now would compute (see :meth:`SlicerModel.request`)."""
        return self.model.request(self.view_state())

    def _render(self) -> None:
        model = self.model
        if model.image is None:
            return
        self._cancel_all(wait=False)
        if self.viewer.dims.ndisplay == 3:  # napari draws the lattice and its plane: nothing to compute
            self._show_volume()
            if model.component == "jacobian" and not model.lattice_ready() and not self._jacobian_building:
                self._build_jacobian()
            return
        generation = model.begin()
        try:
            request = self.current_request()
        except MedinrError as exc:
            self._show_error(str(exc))
            return
        fast = model.lattice_ready()
        exact = model.needs_exact(request)
        grid = self.grid.isChecked() and self.grid.isEnabled() and self.viewer.dims.ndisplay == 2
        self._start(generation, request, fast=fast, exact=exact, grid=grid)
        if not exact:
            self._idle.start()
        if model.component == "jacobian" and not fast and model.lattice is not None and not self._jacobian_building:
            self._build_jacobian()

    def _render_exact_idle(self) -> None:
        """The view has not changed for IDLE_MS: draw it exactly (2D only; the 3D plane is a context view)."""
        shown = self.model.shown
        if shown is None or shown.tier == EXACT or self.viewer.dims.ndisplay != 2:
            return
        if self.model.is_current(shown.generation):
            self._start(shown.generation, shown.request, fast=False, exact=True, grid=False)

    def _start(self, generation: int, request: ViewRequest, fast: bool, exact: bool, grid: bool) -> None:
        """Draw ``request``: the cached frame and the exact one in their own threads (the model keeps the newest)."""
        model = self.model
        on_yield = lambda item, g=generation, r=request: self._on_item(g, r, item)  # noqa: E731
        on_error = lambda exc, g=generation: self._on_worker_error(g, exc)  # noqa: E731

        def cached():
            start = time.perf_counter()
            yield LATTICE, model.fast_frame_for(request), time.perf_counter() - start

        def exact_frames():
            if exact:
                frame, seconds = yield from timed(model.exact_steps(request))
                yield EXACT, frame, seconds
            if grid:
                yield "grid", deformed_grid(model.image, request.plane, request.shape), 0.0

        if fast:
            self._launch(cached, self._pools[0], on_yield=on_yield, on_error=on_error)
        if exact or grid:
            self._launch(exact_frames, self._pools[1], on_yield=on_yield, on_error=on_error)

    def _launch(
        self, steps: Any, pool: QThreadPool, on_yield: Any = None, on_return: Any = None, on_error: Any = None
    ) -> None:
        """Run the generator function ``steps`` in a worker of ``pool``; it stops between steps when cancelled.

        The widget's own one-thread pools keep a cached frame from ever queueing behind an exact render (napari's
        global pool has one thread per core), and let :meth:`shutdown` wait for exactly its own threads.
        """
        stop = threading.Event()

        def work():
            result = yield from _lattices.stoppable(steps(), stop)
            return result

        worker = thread_worker(work, start_thread=False)()
        for signal, slot in ((worker.yielded, on_yield), (worker.returned, on_return), (worker.errored, on_error)):
            if slot is not None:
                signal.connect(lambda *a, slot=slot: None if self._closed or self._hidden else slot(*a))
        entry = (worker, stop)
        worker.finished.connect(lambda: self._workers.remove(entry) if entry in self._workers else None)
        self._workers.append(entry)  # a reference until Qt has delivered its last signal
        pool.start(worker)

    def _cancel_all(self, wait: bool) -> None:
        """Stop every render of this widget; with ``wait``, until their threads have finished."""
        for worker, stop in list(self._workers):
            stop.set()
            worker.quit()
        if wait:
            for pool in self._pools:
                pool.waitForDone(10000)

    def _on_item(self, generation: int, request: ViewRequest, item: Any) -> None:
        if item is None or not self.model.is_current(generation):
            return
        what, payload, seconds = item
        if what == "grid":
            self._show_grid(request, payload)
            return
        if not self.model.accept(generation, what, request, seconds):
            return
        self._show_frame(request, payload)
        tier = "exact (the network at every pixel)" if what == EXACT else "cached lattice (interpolated)"
        self.tier.setText(f"on screen: {tier}")
        self.status.setText(self.model.status())

    def _apply_display(self, layer: Any, frame: np.ndarray) -> None:
        """Colour map and contrast follow the shown quantity (set again when it changes, not on every frame)."""
        key = (id(self.model.image), self.model.component, self.model.lattice_ready(), id(layer))
        if key == self._display_key:
            return
        shown = self.model.display(frame)
        layer.colormap = shown.colormap
        layer.contrast_limits = shown.contrast_limits
        self._display_key = key

    def _show_frame(self, request: ViewRequest, frame: np.ndarray) -> None:
        layer = self._layer(SLICE_LAYER)
        if layer is None:
            return
        layer.metadata[AFFINE_KEY] = slice_geometry(self.model.image, request.plane, request.shape).affine
        layer.metadata["medinr_description"] = self.model.image.describe()
        # one transform (each layer property set re-slices and re-uploads), and only when the view moved: the
        # exact frame of a view then costs the event loop a single refresh
        affine = np.array(
            [[request.scale[0], 0, request.translate[0]], [0, request.scale[1], request.translate[1]], [0, 0, 1]]
        )
        if not np.allclose(layer.affine.affine_matrix, affine):
            layer.affine = affine
        layer.data = frame
        self._apply_display(layer, frame)

    def _show_grid(self, request: ViewRequest, lines: list[np.ndarray]) -> None:
        paths = [np.asarray(request.translate) + p * np.asarray(request.scale) for p in lines]
        self._remove(GRID_LAYER)
        self._busy = True
        try:
            self.viewer.add_shapes(
                paths, shape_type="path", edge_color="yellow", edge_width=min(request.scale), name=GRID_LAYER
            )
        finally:
            self._busy = False

    def _build_jacobian(self) -> None:
        """det(I + du/dx) on the lattice, in the background; cached frames of it follow."""
        self._jacobian_building = True
        image = self.model.image

        def done(_: Any = None) -> None:
            if image is self.model.image:
                self._on_lattice(image, self.model.lattice)

        self._launch(
            self.model.jacobian_steps,
            self._pools[2],
            on_return=done,
            on_error=lambda exc: self._show_error(f"Jacobian lattice failed: {exc}"),
        )

    def _on_worker_error(self, generation: int, exc: BaseException) -> None:
        if self.model.is_current(generation):
            self._show_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _show_error(self, message: str) -> None:
        self.last_error = message
        self.status.setText(f"error: {message}")

    # -- lifetime ----------------------------------------------------------------------------------------------
    def hideEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """Hidden (or the viewer closing): stop rendering and wait for the worker threads to leave."""
        self._hidden = True
        self._debounce.stop()
        self._idle.stop()
        self._cancel_all(wait=True)
        super().hideEvent(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._hidden = False
        self._schedule()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop renders, disconnect every callback, remove the slicer's layers and give back the parked ones."""
        self._debounce.stop()
        self._idle.stop()
        self._cancel_all(wait=True)
        self._closed = True
        for emitter, callback in self._connections:
            emitter.disconnect(callback)
        self._connections = []
        if self._on_drag in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_drag)
        for name in OWN_LAYERS:
            self._remove(name)
        self._restore_parked()
        self.model.image = None


def _pool(parent: QWidget) -> QThreadPool:
    pool = QThreadPool(parent)
    pool.setMaxThreadCount(1)
    return pool


def _single_shot(parent: QWidget, ms: int, slot: Any) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(slot)
    return timer


def _spin(lo: float, hi: float, value: float, step: float, suffix: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    spin.setSingleStep(step)
    spin.setSuffix(suffix)
    spin.setDecimals(2)
    spin.setKeyboardTracking(False)
    return spin
