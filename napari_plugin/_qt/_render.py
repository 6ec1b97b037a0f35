"""Worker threads and their timing: what the slicer computes off the main thread, and when.

A change of view is drawn from the cached lattice at once (one cached render in flight; while a drag outruns it,
the newest view is drawn next and the ones in between are skipped). The exact frame follows when
:class:`~napari_plugin._tiers.RenderPolicy` says: at once for a single change, after a short quiet period during
a stream, after a longer idle period when the lattice already holds the view. Each kind of work has its own
one-thread pool, so a cached frame never queues behind an exact render and :meth:`Renderer.shutdown` waits for
exactly its own threads; torch releases the GIL, so the UI stays responsive. Results reach the main thread as
Qt signals; layers are only touched there (by the widget).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, QThreadPool, QTimer, Signal

from medinr.errors import MedinrError
from medinr.render import deformed_grid
from napari_plugin._lattices import stoppable
from napari_plugin._slicer_model import SlicerModel, ViewState
from napari_plugin._tiers import EXACT, LATTICE, RenderPolicy, exact_steps, fast_frame
from napari_plugin._viewport import MAIN, ViewRequest
from napari_plugin._window import display_for

KINDS = ("cached", "exact", "aux")


@dataclass(frozen=True)
class Frame:
    """A finished frame on its way to the main thread."""

    generation: int
    tier: str
    request: ViewRequest
    data: np.ndarray
    seconds: float


class Renderer(QObject):
    """Computes the frames of the model's views in worker threads (see the module docstring)."""

    frame = Signal(object)  # Frame
    grid = Signal(object, object)  # ViewRequest, list of (n, 2) pixel paths
    display = Signal(object, object)  # component, Display
    volume = Signal(object)  # component whose lattice volume is ready (3D)
    lattice_changed = Signal()  # the Jacobian was added to the lattice
    failed = Signal(str)

    def __init__(self, model: SlicerModel, view_state: Callable[[], ViewState | None], parent: QObject) -> None:
        super().__init__(parent)
        self.model, self._view_state = model, view_state
        self.policy = RenderPolicy()
        self._pools = {kind: _pool(self) for kind in KINDS}
        self._workers: list[tuple[Any, threading.Event, str]] = []
        self._kick = _single_shot(self, self._render)
        self._exact_timer = _single_shot(self, self._start_exact)
        self._latest: tuple[int, list[ViewRequest]] | None = None
        self._cached_busy = self._dirty = self._closed = False
        self.paused = False  # hidden: results are dropped

    # -- scheduling ------------------------------------------------------------------------------------------
    def schedule(self) -> None:
        """Draw the current views soon (events of one event-loop turn make one render)."""
        if self.model.image is not None and not (self._closed or self.paused):
            self._kick.start()

    def idle(self) -> bool:
        """Nothing pending: no timer running and no frame being computed."""
        busy = any(kind != "aux" for _, _, kind in self._workers)
        return not (self._kick.isActive() or self._exact_timer.isActive() or busy)

    def _render(self) -> None:
        model, view = self.model, self._view_state()
        if model.image is None or view is None:  # 3D: napari draws the lattice; nothing to compute
            return
        try:
            requests = model.requests(view)
        except MedinrError as exc:
            self.failed.emit(str(exc))
            return
        generation = model.log.begin()
        self.cancel("exact")
        self._latest = (generation, requests)
        streaming = self.policy.change(time.monotonic())
        if model.lattice_ready():
            self._start_cached()
        needs = not model.lattice_ready() or any(model.needs_exact(r) for r in requests)
        self._exact_timer.start(int(1000 * self.policy.exact_delay(streaming, needs)))
        if model.component == "jacobian" and model.lattice is not None and not model.lattice_ready():
            self.build_jacobian()

    def _start_cached(self) -> None:
        if self._cached_busy:
            self._dirty = True  # the newest view is drawn when the one in flight is done
            return
        generation, requests = self._latest  # type: ignore[misc]
        model, comp, lattice = self.model, self.model.component, self.model.lattice
        known = model.window.displays.get(comp) is not None
        grid = self._grid_request(requests)

        def job() -> Generator[Any, None, None]:
            for request in requests:
                start = time.perf_counter()
                data = fast_frame(lattice, request, comp)
                yield Frame(generation, LATTICE, request, data, time.perf_counter() - start)
            if grid is not None:
                yield ("grid", grid, deformed_grid(model.image, grid.plane, grid.shape))
            if not known:
                yield ("display", comp, display_for(model.image.kind, comp, model.volume(comp)))

        self._cached_busy = True
        self._launch(job, "cached", generation, done=self._cached_done)

    def _cached_done(self) -> None:
        self._cached_busy = False
        if self._dirty and not self._closed:
            self._dirty = False
            self._start_cached()

    def _start_exact(self) -> None:
        if self._latest is None or not self.model.log.is_current(self._latest[0]):
            return
        generation, requests = self._latest
        model, comp = self.model, self.model.component
        ready = model.lattice_ready()
        grid = None if ready else self._grid_request(requests)

        def job() -> Generator[Any, None, None]:
            for request in requests:
                start = time.perf_counter()
                data = yield from exact_steps(model.image, request, comp)
                yield Frame(generation, EXACT, request, data, time.perf_counter() - start)
                if not ready and model.window.displays.get(comp) is None:
                    yield ("display", comp, display_for(model.image.kind, comp, data))
            if grid is not None:
                yield ("grid", grid, deformed_grid(model.image, grid.plane, grid.shape))

        self._launch(job, "exact", generation)

    def _grid_request(self, requests: Iterable[ViewRequest]) -> ViewRequest | None:
        if not (self.model.controls.grid and self.model.image.kind == "displacement"):
            return None
        return next((r for r in requests if r.key == MAIN), None)

    # -- background lattice work -----------------------------------------------------------------------------
    def build_jacobian(self) -> None:
        """det(I + du/dx) on the lattice, in the background; the views are drawn again when it is there."""
        if any(kind == "aux" for _, _, kind in self._workers):
            return
        image = self.model.image

        def job() -> Generator[Any, None, None]:
            yield from self.model.jacobian_steps()
            yield ("lattice", image)

        self._launch(job, "aux", None)

    def prepare_volume(self) -> None:
        """The lattice volume of the shown component (3D), and its display, in the background."""
        model, comp = self.model, self.model.component
        if not model.lattice_ready():
            return

        def job() -> Generator[Any, None, None]:
            volume = model.volume(comp)
            if model.window.displays.get(comp) is None:
                yield ("display", comp, display_for(model.image.kind, comp, volume))
            yield ("volume", comp)

        self._launch(job, "aux", None)

    # -- workers ---------------------------------------------------------------------------------------------
    def _launch(self, job: Callable[[], Generator], kind: str, generation: int | None, done: Any = None) -> None:
        """Run ``job`` in a worker of pool ``kind``; it stops between its steps when cancelled."""
        stop = threading.Event()

        def work() -> Generator[Any, None, None]:
            yield from stoppable(job(), stop)

        worker = thread_worker(work, start_thread=False)()
        worker.yielded.connect(self._deliver)
        worker.errored.connect(lambda exc, g=generation: self._error(g, exc))
        entry = (worker, stop, kind)

        def finished() -> None:
            if entry in self._workers:
                self._workers.remove(entry)
            if done is not None:
                done()

        worker.finished.connect(finished)
        self._workers.append(entry)  # a reference until Qt has delivered its last signal
        self._pools[kind].start(worker)

    def _deliver(self, item: Any) -> None:
        if self._closed or self.paused or not isinstance(item, (Frame, tuple)):
            return  # progress fractions and band markers only let a worker stop between steps
        if isinstance(item, Frame):
            self.frame.emit(item)
        elif item[0] == "grid":
            self.grid.emit(item[1], item[2])
        elif item[0] == "display":
            self.display.emit(item[1], item[2])
        elif item[0] == "volume":
            self.volume.emit(item[1])
        elif item[0] == "lattice" and item[1] is self.model.image:
            self.lattice_changed.emit()

    def _error(self, generation: int | None, exc: BaseException) -> None:
        if not self._closed and (generation is None or self.model.log.is_current(generation)):
            self.failed.emit(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def cancel(self, kind: str | None = None, wait: bool = False) -> None:
        """Stop the workers of ``kind`` (all when None); with ``wait``, until their threads have finished."""
        for worker, stop, k in list(self._workers):
            if kind is None or k == kind:
                stop.set()
                worker.quit()
        if wait:
            for k, pool in self._pools.items():
                if kind is None or k == kind:
                    pool.waitForDone(10000)

    def shutdown(self) -> None:
        """Stop timers and workers and wait for the threads; nothing is delivered afterwards."""
        self._kick.stop()
        self._exact_timer.stop()
        self._closed = True
        self.cancel(wait=True)


def _pool(parent: QObject) -> QThreadPool:
    pool = QThreadPool(parent)
    pool.setMaxThreadCount(1)
    return pool


def _single_shot(parent: QObject, slot: Callable[[], None]) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(slot)
    return timer
