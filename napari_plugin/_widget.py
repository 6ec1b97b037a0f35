"""The slicing dock widget: any plane of an INR, rendered for the visible region at screen resolution.

Camera and canvas changes are debounced, each render runs coarse to fine in a napari ``thread_worker``,
results of superseded renders are dropped by a generation counter, and layers are only touched here on
the main thread (worker signals are delivered there).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QWidget,
)

from medinr.errors import MedinrError
from medinr.render import (
    PRESETS,
    Plane,
    default_plane,
    deformed_grid,
    describe,
    render_plane,
    render_progressive,
    slice_geometry,
    world_ndim,
)
from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY
from napari_plugin._viewport import ViewRequest, context_affine, fit_zoom, visible_request

if TYPE_CHECKING:
    import napari

#: Quiet time after the last camera event before a render starts, ms.
DEBOUNCE_MS = 60
#: Stride of the first, coarse pass (1/16 of the pixels).
COARSE_STRIDE = 4
#: Pixels per side of the tilted plane shown in the 3D view.
CONTEXT_SIDE = 256

SLICE_LAYER = "medinr slice"
CONTEXT_LAYER = "medinr slice 3D"
GRID_LAYER = "medinr deformed grid"


class SliceWidget(QWidget):
    """Dock widget: choose a checkpoint layer, a plane (preset, normal, tilt, offset) and a zoom."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._ckpt: Any = None
        self._source_layers: list[Any] = []
        self._base: Plane | None = None
        self._generation = 0
        self._worker: Any = None
        self._contrast_set = False
        #: Final frames shown so far and the request behind the last one (for tests and the status line).
        self.render_count = 0
        self.last_request: ViewRequest | None = None
        self.last_error: str | None = None

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._start_render)

        form = QFormLayout(self)
        self.source = QComboBox()
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.normal = QLineEdit()
        self.normal.setPlaceholderText("NX,NY,NZ (overrides the preset)")
        self.tilt_col = _spin(-90, 90, 0.0, 1.0, " deg")
        self.tilt_row = _spin(-90, 90, 0.0, 1.0, " deg")
        self.offset = _spin(-1000, 1000, 0.0, 1.0, " mm")
        self.zoom = _spin(0.05, 200, 1.0, 0.25, "x")
        self.component = QComboBox()
        self.grid = QCheckBox("deformed grid (registration)")
        self.compile = QCheckBox("torch.compile (faster frames after a one-off warm-up)")
        self._use_compile = False
        self.status = QLabel("open a .inr checkpoint (drag and drop) or File > Open Sample > medinr")
        self.status.setWordWrap(True)
        form.addRow("checkpoint", self.source)
        form.addRow("plane", self.preset)
        form.addRow("normal", self.normal)
        form.addRow("tilt about columns", self.tilt_col)
        form.addRow("tilt about rows", self.tilt_row)
        form.addRow("offset", self.offset)
        form.addRow("zoom", self.zoom)
        form.addRow("show", self.component)
        form.addRow(self.grid)
        form.addRow(self.compile)
        form.addRow(self.status)

        self.source.currentIndexChanged.connect(self._on_source)
        self.preset.currentIndexChanged.connect(self._on_plane_changed)
        self.normal.editingFinished.connect(self._on_plane_changed)
        for spin in (self.tilt_col, self.tilt_row, self.offset):
            spin.valueChanged.connect(self._on_plane_changed)
        self.zoom.valueChanged.connect(self._on_zoom_spin)
        self.component.currentIndexChanged.connect(self._on_plane_changed)
        self.grid.toggled.connect(self._on_plane_changed)
        self.compile.toggled.connect(self._on_compile)

        cam = self.camera
        cam.events.zoom.connect(self._schedule)
        cam.events.center.connect(self._schedule)
        canvas_events = getattr(getattr(self.viewer, "canvas", None), "events", None)
        if canvas_events is not None and hasattr(canvas_events, "size"):
            canvas_events.size.connect(self._schedule)
        self.viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self._refresh_sources()

    # -- viewer access ----------------------------------------------------------------------------
    @property
    def camera(self) -> Any:
        """The camera (``viewer.scene.camera`` in napari >= 0.9, ``viewer.camera`` before)."""
        scene = getattr(self.viewer, "scene", None)
        return scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera

    def canvas_size(self) -> tuple[int, int]:
        """Canvas size in screen pixels (h, w)."""
        size = getattr(getattr(self.viewer, "canvas", None), "size", None)
        if size is None:
            size = self.viewer.window._qt_viewer.canvas.size[::-1]  # older napari: vispy (w, h)
        return int(size[0]), int(size[1])

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # -- sources and plane --------------------------------------------------------------------------
    def _refresh_sources(self, event: Any = None) -> None:
        layers = [
            lyr
            for lyr in self.viewer.layers
            if CHECKPOINT_KEY in getattr(lyr, "metadata", {}) and lyr.name != SLICE_LAYER
        ]
        current = self.source.currentText()
        names = [lyr.name for lyr in layers]
        if names == [self.source.itemText(i) for i in range(self.source.count())]:
            return
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(names)
        if current in names:
            self.source.setCurrentIndex(names.index(current))
        self.source.blockSignals(False)
        if self.source.currentText() != current or self._ckpt is None:
            self._on_source()

    def _on_source(self, index: int = 0) -> None:
        name = self.source.currentText()
        if not name or name not in self.viewer.layers:
            return
        self.set_checkpoint(self.viewer.layers[name].metadata[CHECKPOINT_KEY])

    def set_checkpoint(self, ckpt: Any) -> None:
        """Slice ``ckpt`` (a medinr Checkpoint): the base plane is reset and the view fitted to it."""
        if ckpt is self._ckpt:
            return
        self._ckpt = ckpt
        self._contrast_set = False
        self._use_compile = False
        self.compile.setChecked(False)
        kind = ckpt.kind
        comps = {"intensity": ["auto"], "complex": ["magnitude", "real", "imag", "phase"]}.get(
            kind, ["magnitude", "jacobian", "0", "1", "2"][: 2 + world_ndim(ckpt)]
        )
        self.component.blockSignals(True)
        self.component.clear()
        self.component.addItems(comps)
        self.component.blockSignals(False)
        three_d = world_ndim(ckpt) == 3
        for w in (self.preset, self.normal, self.tilt_col, self.tilt_row, self.offset):
            w.setEnabled(three_d)
        self.grid.setEnabled(kind == "displacement")
        self._source_layers = [lyr for lyr in self.viewer.layers if lyr.metadata.get(CHECKPOINT_KEY) is ckpt]
        self._on_plane_changed(fit=True)

    def base_plane(self) -> Plane:
        """The whole slice the controls describe."""
        ckpt = self._ckpt
        if world_ndim(ckpt) == 2:
            return default_plane(ckpt)
        spec = self.normal.text().strip() or self.preset.currentText()
        return default_plane(ckpt, spec, self.offset.value(), (self.tilt_col.value(), self.tilt_row.value()))

    def _on_plane_changed(self, *args: Any, fit: bool = False) -> None:
        if self._ckpt is None:
            return
        try:
            base = self.base_plane()
        except MedinrError as exc:
            self._show_error(str(exc))
            return
        refit = fit or self._base is None or not np.allclose(base.fov_mm, self._base.fov_mm)
        self._base = base
        if self.viewer.dims.ndisplay == 2:
            self._show_2d()
            if refit:
                self._fit_camera()
        self._schedule()

    def _fit_camera(self) -> None:
        base = self._base
        cam = self.camera
        center = list(cam.center)
        center[-2:] = [base.fov_mm[0] / 2, base.fov_mm[1] / 2]
        cam.center = tuple(center)
        cam.zoom = fit_zoom(base, self.canvas_size()) * self.zoom.value()

    def _on_zoom_spin(self, value: float) -> None:
        if self._base is not None and self.viewer.dims.ndisplay == 2:
            self.camera.zoom = fit_zoom(self._base, self.canvas_size()) * value

    def _on_ndisplay(self, event: Any = None) -> None:
        if self._ckpt is None:
            return
        if self.viewer.dims.ndisplay == 2:
            self._show_2d()
        else:
            for lyr in self._source_layers:
                lyr.visible = True
            for name in (SLICE_LAYER, GRID_LAYER):
                if (lyr := self._layer(name)) is not None:
                    lyr.visible = False
        self._schedule()

    def _show_2d(self) -> None:
        """In 2D the slice (in plane mm) replaces the axis-aligned volume, whose frame differs."""
        for lyr in self._source_layers:
            if lyr in self.viewer.layers:
                lyr.visible = False
        if (ctx := self._layer(CONTEXT_LAYER)) is not None:
            ctx.visible = False
        if self._layer(SLICE_LAYER) is None:
            self.viewer.add_image(
                np.zeros((2, 2), np.float32),
                name=SLICE_LAYER,
                colormap="gray",
                metadata={"medinr_description": describe(self._ckpt)},
            )
        self._layer(SLICE_LAYER).visible = True

    # -- rendering ----------------------------------------------------------------------------------
    def _schedule(self, event: Any = None) -> None:
        if self._ckpt is not None:
            self._timer.start()

    def current_request(self) -> ViewRequest:
        """What a render now would compute: the visible region in 2D, the whole tilted plane in 3D."""
        base = self._base
        if self.viewer.dims.ndisplay == 3:
            side = CONTEXT_SIDE / max(base.fov_mm)
            shape = (max(1, int(base.fov_mm[0] * side)), max(1, int(base.fov_mm[1] * side)))
            return ViewRequest(base, shape, base.spacing(shape), (0.0, 0.0))
        cam = self.camera
        center = tuple(float(c) for c in cam.center[-2:])
        return visible_request(base, center, cam.zoom, self.canvas_size())

    def _start_render(self) -> None:
        if self._ckpt is None or self._base is None:
            return
        self._generation += 1
        generation = self._generation
        if self._worker is not None:
            self._worker.quit()  # the old generator stops at its next frame; its results are ignored anyway
        request = self.current_request()
        ckpt, component = self._ckpt, self.component.currentText() or "auto"
        component = int(component) if component.isdigit() else component
        want_grid = self.grid.isChecked() and self.grid.isEnabled() and self.viewer.dims.ndisplay == 2
        strides = (1,) if self.viewer.dims.ndisplay == 3 else (COARSE_STRIDE, 1)
        use_compile = self._use_compile and not ckpt.lattice_bound

        @thread_worker
        def work():
            start = time.perf_counter()
            frames = render_progressive(
                ckpt, request.plane, request.shape, strides=strides, component=component, compile=use_compile
            )
            for frame in frames:
                yield "frame", frame, time.perf_counter() - start
            if want_grid:
                yield "grid", deformed_grid(ckpt, request.plane, request.shape), 0.0

        worker = work()
        worker.yielded.connect(lambda item, g=generation, r=request: self._on_result(g, r, item))
        worker.errored.connect(lambda exc, g=generation: self._on_worker_error(g, exc))
        self._worker = worker
        worker.start()

    def _on_result(self, generation: int, request: ViewRequest, item: tuple) -> None:
        if generation != self._generation:
            return  # a newer render was asked for: this one shows a view that no longer exists
        what, payload, seconds = item
        if what == "grid":
            self._show_grid(request, payload)
            return
        frame = payload
        if self.viewer.dims.ndisplay == 3:
            self._show_context(frame)
        else:
            self._show_frame(request, frame)
        if frame.final:
            self.render_count += 1
            self.last_request = request
            dr, dc = request.scale
            where = "3D context" if self.viewer.dims.ndisplay == 3 else "visible region"
            self.status.setText(
                f"{describe(self._ckpt)}\n{where}: {request.shape[0]}x{request.shape[1]} px of "
                f"{dr:.3g}x{dc:.3g} mm in {seconds * 1000:.0f} ms"
            )

    def _show_frame(self, request: ViewRequest, frame: Any) -> None:
        layer = self._layer(SLICE_LAYER)
        if layer is None:
            return
        s = frame.stride
        affine = slice_geometry(self._ckpt, request.plane, request.shape).affine.copy()
        affine[:3, :2] *= s
        layer.metadata[AFFINE_KEY] = affine
        layer.scale = (request.scale[0] * s, request.scale[1] * s)
        layer.translate = request.translate
        layer.data = frame.image
        if not self._contrast_set and frame.final:
            lo, hi = np.percentile(frame.image, [0.5, 99.5])
            if hi > lo:
                layer.contrast_limits = (float(lo), float(hi))
                self._contrast_set = True

    def _show_context(self, frame: Any) -> None:
        affine = context_affine(frame.affine)
        layer = self._layer(CONTEXT_LAYER)
        data = frame.image[None]
        if layer is None:
            self.viewer.add_image(
                data, name=CONTEXT_LAYER, affine=affine, colormap="gray", metadata={AFFINE_KEY: frame.affine}
            )
        else:
            layer.affine = affine
            layer.metadata[AFFINE_KEY] = frame.affine
            layer.data = data
            layer.visible = True

    def _show_grid(self, request: ViewRequest, lines: list[np.ndarray]) -> None:
        paths = [np.asarray(request.translate) + p * np.asarray(request.scale) for p in lines]
        if (old := self._layer(GRID_LAYER)) is not None:
            self.viewer.layers.remove(old)
        self.viewer.add_shapes(
            paths, shape_type="path", edge_color="yellow", edge_width=min(request.scale), name=GRID_LAYER
        )

    def _on_compile(self, checked: bool) -> None:
        """Compile in the background; frames stay eager (and the UI live) until the compiled model is ready."""
        if not checked:
            self._use_compile = False
            return
        if self._ckpt is None or self._base is None:
            self.compile.setChecked(False)
            return
        ckpt, plane = self._ckpt, self._base
        self.status.setText("compiling the network for faster frames (eager frames meanwhile)...")

        @thread_worker
        def warm_up():
            render_plane(ckpt, plane, (8, 8), compile=True)

        def ready() -> None:
            if self.compile.isChecked() and ckpt is self._ckpt:
                self._use_compile = True
                self.status.setText("compiled: frames now use torch.compile")
                self._schedule()

        worker = warm_up()
        worker.returned.connect(ready)
        worker.errored.connect(lambda exc: self._show_error(f"torch.compile failed, staying eager: {exc}"))
        worker.start()

    def _on_worker_error(self, generation: int, exc: BaseException) -> None:
        if generation == self._generation:
            self._show_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _show_error(self, message: str) -> None:
        self.last_error = message
        self.status.setText(f"error: {message}")


def _spin(lo: float, hi: float, value: float, step: float, suffix: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    spin.setSingleStep(step)
    spin.setSuffix(suffix)
    spin.setDecimals(2)
    spin.setKeyboardTracking(False)
    return spin
