"""The slicer dock widget: a :class:`~napari_plugin._slicer_model.SlicerModel` and the small Qt views over it.

- :mod:`._controls`: the form (writes to the model, follows it);
- :mod:`._canvas`: camera and zoom box, cursor read-out, gestures, orientation labels;
- :mod:`._render`: worker threads and when each tier is computed;
- :mod:`._layers`: the napari layers (checkpoint layers set aside, one image per view, grid, crosshair, window);
- :mod:`._volume`: the 3D view.

This class only wires them together and follows the viewer (layers added, 2D/3D, hide, close).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_plugin import _lattices, _slicers
from napari_plugin._layer_book import is_own, is_source
from napari_plugin._layers import CHECKPOINT_KEY
from napari_plugin._qt._canvas import CanvasView
from napari_plugin._qt._controls import ControlsView
from napari_plugin._qt._layers import SliceLayers
from napari_plugin._qt._render import Frame, Renderer
from napari_plugin._qt._volume import VolumeView
from napari_plugin._reader import prefer_medinr_for_nifti
from napari_plugin._slicer_model import SlicerModel
from napari_plugin._tiers import EXACT
from napari_plugin._viewport import crosshair_lines

if TYPE_CHECKING:
    import napari

#: Controls the widget exposes as attributes (scripts and tests drive them as a user would).
CONTROLS = ("source", "preset", "normal", "tilt_col", "tilt_row", "offset", "zoom", "component", "window_preset",
            "convention", "linked", "grid", "tier", "cursor", "status")


class SliceWidget(QWidget):
    """Dock widget: browse a checkpoint at any plane, zoom and window; linked orthogonal views as an option."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        prefer_medinr_for_nifti()
        self.viewer = napari_viewer
        self.model = SlicerModel()
        self.controls = ControlsView(self.model, self)
        QVBoxLayout(self).addWidget(self.controls)
        self.layers = SliceLayers(napari_viewer, self.model)
        self.canvas = CanvasView(napari_viewer, self.model, self.controls.zoom, self)
        self.renderer = Renderer(self.model, self.canvas.view_state, self)
        self.volume = VolumeView(napari_viewer, self.model, self.layers)
        self.last_error: str | None = None
        self._closed = False
        self._select: Any = None
        self._opening: list[Any] = []
        self._labels_pending = False  # a new checkpoint's edge letters wait for its first frame
        self._sources_timer = _deferred(self, self._refresh_sources)
        self._mode_timer = _deferred(self, lambda: self._enter_mode(fit=True))
        self._connect()
        self._refresh_sources()
        _warm_up()
        _slicers.register(self)

    def _connect(self) -> None:
        events, r = self.model.events, self.renderer
        events.views.connect(self._on_views)
        events.display.connect(self.layers.apply_display)
        events.error.connect(lambda message: setattr(self, "last_error", message or None))
        events.cursor.connect(lambda text: setattr(self.viewer, "help", text))
        self.canvas.changed.connect(r.schedule)
        r.frame.connect(self._on_frame)
        r.grid.connect(self.layers.show_grid)
        r.display.connect(self.model.learn_display)
        r.volume.connect(lambda comp: comp == self.model.component and self._show_volume(self.model.volume(comp)))
        r.lattice_changed.connect(lambda: self._enter_mode(fit=False))
        r.failed.connect(self._on_failed)
        self.controls.source.currentTextChanged.connect(self._on_source)
        self.canvas.connect()
        layers = self.viewer.layers.events
        self._viewer_events = [(layers.inserted, self._on_layers_changed), (layers.removed, self._on_layers_changed),
                               (self.viewer.dims.events.ndisplay, self._on_ndisplay)]
        for emitter, callback in self._viewer_events:
            emitter.connect(callback)

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def camera(self) -> Any:
        return self.canvas.camera

    def canvas_size(self) -> tuple[int, int]:
        return self.canvas.canvas_size()

    def idle(self) -> bool:
        """True when nothing is scheduled or being computed (tests and benchmarks wait for it)."""
        timers = self._sources_timer.isActive() or self._mode_timer.isActive()
        return self.renderer.idle() and not timers and not self._opening

    @property
    def closed(self) -> bool:
        """Shut down, or deleted by Qt with its window (a viewer closed without closing its docks first)."""
        return self._closed or self.deleted

    @property
    def deleted(self) -> bool:
        try:
            self.objectName()
        except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
            return True
        return False

    def opening(self, worker: Any) -> None:
        """Start ``worker``, which opens a checkpoint for this slicer (the reader's thread): busy until it is done.

        A first opening sets up the single view first, one step per event so that each gets its own paint: the
        view's hidden layer (napari's set-up of a layer, 50-70 ms), then its first draw, which compiles its
        shaders (30-70 ms with a software OpenGL) before the first frame needs them. The thread starts after
        both: it times the model to plan the lattice (:func:`medinr.render.plan_lattice`), a probe that the
        main thread's work would slow (a coarser lattice), and its Python work would slow napari's.
        """
        self._opening.append(worker)
        worker.finished.connect(lambda: self._opening.remove(worker) if worker in self._opening else None)
        worker.errored.connect(lambda exc: self.opened(failed=True))
        if self.model.image is not None or self.viewer.dims.ndisplay != 2 or self.model.controls.linked:
            worker.start()
            return
        self.canvas.end_warm_up()
        _soon(self, lambda: self._prepare(worker))

    def _prepare(self, worker: Any) -> None:
        if self._closed or self.model.image is not None:
            worker.start()
            return
        self.layers.prepare()
        _soon(self, lambda: self._reveal(worker))

    def _reveal(self, worker: Any) -> None:
        if not self._closed:
            self.layers.reveal()
        _soon(self, worker.start)  # after that paint: the speed probe is timed on a quiet process

    def opened(self, failed: bool) -> None:
        """The reader's thread is done; after a failed first opening the prepared layer goes again."""
        if failed and self.model.image is None and not self._closed:
            self.layers.remove_all()

    def adopt(self, layer: Any) -> None:
        """Take a checkpoint's volume layer that was never added to the viewer (the reader hands it over)."""
        self.layers.parked.append(layer)
        self._select = layer
        self._sources_timer.start()

    def set_checkpoint(self, image: Any, path: str | None = None) -> None:
        """Slice ``image`` (a ContinuousImage): its lattice so far, the full one asked for, the view fitted."""
        if image is self.model.image:
            return
        self.renderer.cancel()
        self.model.set_image(image, _lattices.current(image))
        if not _lattices.is_final(image):
            _lattices.listen(image, self._on_lattice)
            _lattices.ensure(image, path)
        self._labels_pending = True  # laid out and drawn (20 + 40-60 ms) in a step after the first frame's
        self._enter_mode(fit=True, labels=False)

    # -- sources ---------------------------------------------------------------------------------------------
    def _on_layers_changed(self, event: Any = None) -> None:
        value = getattr(event, "value", None)
        if self._closed or value is None or is_own(value.name, value.metadata):
            return
        if event.type == "inserted" and is_source(value.metadata):
            self._select = value
        self._sources_timer.start()  # after napari has finished adding the layer

    def _refresh_sources(self) -> None:
        if self._closed:
            return
        self.layers.park()
        sources = self.layers.sources()
        names = [lyr.name for lyr in sources]
        select, self._select = self._select, None
        box = self.controls.source
        current = select.name if select is not None and select in sources else box.currentText()
        box.blockSignals(True)
        box.clear()
        box.addItems(names)
        box.setCurrentText(current if current in names else (names[0] if names else ""))
        box.blockSignals(False)
        self._on_source(box.currentText())

    def _on_source(self, name: str) -> None:
        layer = next((lyr for lyr in self.layers.sources() if lyr.name == name), None)
        if layer is not None:
            self.set_checkpoint(layer.metadata[CHECKPOINT_KEY], layer.metadata.get("medinr_path"))

    def _on_lattice(self, image: Any, lattice: Any) -> None:
        # the full lattice may arrive after the viewer closed (its build starts late: _lattices.START_DELAY_MS)
        if image is self.model.image and not self.closed:
            self.model.set_lattice(lattice)
            self.controls.sync()
            self._enter_mode(fit=False)

    # -- modes, views and frames -----------------------------------------------------------------------------
    def _on_ndisplay(self, event: Any = None) -> None:
        # after napari has finished switching: changing layers inside its ndisplay event breaks its dims widget
        self.renderer.cancel()
        self.canvas.mode = None  # nothing is drawn until the layers are those of the new mode
        self._mode_timer.start()

    def _enter_mode(self, fit: bool, labels: bool = True) -> None:
        if self.model.image is None or self._closed:
            return
        nd = self.viewer.dims.ndisplay
        self.layers.ensure(nd)
        self.canvas.mode = nd
        if labels or nd == 3:
            self._labels_pending = False
            self.canvas.update_labels()
        if nd == 3:
            if not (self.volume.current() and self.volume.show(None)):  # else only the plane moved
                self.renderer.prepare_volume()  # another lattice or quantity: computed in a worker, then shown
            if fit:
                self.viewer.reset_view()
            return
        if fit:
            self.canvas.fit()
        self._show_crosshair()
        self.renderer.schedule()

    def _on_views(self, refit: bool) -> None:
        self._enter_mode(fit=refit and self.viewer.dims.ndisplay == 2)  # the 3D camera stays where the user put it

    def _show_volume(self, volume: Any) -> None:
        if self.viewer.dims.ndisplay == 3 and not self._closed:
            self.volume.show(volume)

    def _show_crosshair(self) -> None:
        if self.model.controls.linked and self.model.crosshair is not None:
            self.layers.show_crosshair(crosshair_lines(self.model.tiles(), self.model.crosshair))
            self.layers.show_tile_labels()

    def _on_frame(self, frame: Frame) -> None:
        if self._closed or self.canvas.mode != 2 or self.viewer.dims.ndisplay != 2:
            return
        if self.model.accept(frame.generation, frame.tier, frame.request, frame.data, frame.seconds):
            self.layers.show_frame(frame.request, frame.data, frame.tier)
            if self._labels_pending:
                self._labels_pending = False
                _soon(self, self.canvas.update_labels)
            if frame.tier == EXACT and self.layers.to_select:
                _soon(self, self.layers.select_own)

    def _on_failed(self, message: str) -> None:
        self.last_error = message
        self.controls.status.setText(f"{self.model.status()}\nerror: {message}")

    # -- lifetime --------------------------------------------------------------------------------------------
    def hideEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """Hidden (or the viewer closing): stop rendering and wait for the worker threads to leave."""
        self.renderer.paused = True
        self.renderer.cancel(wait=True)
        super().hideEvent(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.renderer.paused = False
        self.renderer.schedule()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop renders, disconnect, remove the slicer's layers and give back the ones set aside."""
        if self._closed:
            return
        _slicers.unregister(self)
        self.renderer.shutdown()
        self._closed = True
        for timer in (self._sources_timer, self._mode_timer):
            timer.stop()
        for emitter, callback in self._viewer_events:
            emitter.disconnect(callback)
        self.canvas.disconnect()
        self.layers.remove_all()
        self.layers.restore()
        self.model.set_image(None)


for _name in CONTROLS:  # widget.offset is widget.controls.offset, and so on
    setattr(SliceWidget, _name, property(lambda self, n=_name: getattr(self.controls, n)))


def _warm_up() -> None:
    """Load in a thread now what the first checkpoint's opening would otherwise load on the main thread: napari's
    unit registry (pint, 0.2-0.7 s, when the first layer in mm is added) and scikit-image's thresholds with
    scipy.ndimage (0.2-0.3 s, for the default window: :func:`napari_plugin._window.foreground`)."""
    import threading

    from napari.utils._units import get_unit_registry

    def load() -> None:
        _ = get_unit_registry().mm  # the first unit looked up builds the registry
        from skimage.filters import threshold_otsu  # noqa: F401

    threading.Thread(target=load, name="medinr-warm-up", daemon=True).start()


def _soon(parent: QWidget, slot: Any) -> None:
    """Run ``slot`` in an event of its own, after the window has painted what came before (a 1 ms timer, not a
    posted call: Qt delivers posted calls before the paint and the other timers, in one stretch)."""
    timer = QTimer(parent)  # owned by the widget: gone with it, never fired on a deleted one
    timer.setSingleShot(True)
    timer.setInterval(1)
    timer.timeout.connect(slot)
    timer.timeout.connect(timer.deleteLater)
    timer.start()


def _deferred(parent: QWidget, slot: Any) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(slot)
    return timer
