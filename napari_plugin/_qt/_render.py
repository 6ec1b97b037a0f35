"""Worker threads and their timing: what the slicer computes off the main thread, and when.

A change of view is drawn from the cached lattice at once: on the main thread when that is a few ms (then the
control and the frame reach the screen in one repaint), else in a worker (one cached render in flight; while a
drag outruns it, the newest view is drawn next and the ones in between are skipped). The exact frame follows when
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
from medinr.render.lattice import jacobian_steps
from napari_plugin._lattices import stoppable
from napari_plugin._slicer_model import SlicerModel, ViewState
from napari_plugin._tiers import EXACT, LATTICE, RenderPolicy, exact_steps, fast_frame, fast_request
from napari_plugin._viewport import MAIN, ViewRequest
from napari_plugin._window import display_for

KINDS = ("cached", "exact", "aux")
#: A cached frame of at most this many interpolated points (about 2 ms) is computed on the main thread.
INLINE_POINTS = 1 << 16


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
    grid = Signal(object, object)  # ViewRequest, list of (n, 2) pixel paths (of the current view only)
    display = Signal(object, object)  # component, Display
    volume = Signal(object)  # component whose lattice volume is ready (3D)
    lattice_changed = Signal()  # the Jacobian was added to the lattice
    failed = Signal(str)

    def __init__(self, model: SlicerModel, view_state: Callable[[], ViewState | None], parent: QObject) -> None:
        super().__init__(parent)
        self.model, self._view_state = model, view_state
        self.policy = RenderPolicy()
        self.workers = Workers(self)
        self._kick = _single_shot(self, self._render_again)
        self._drawn: Any = None  # (model revision, camera) of the last render
        self._exact_timer = _single_shot(self, self._start_exact)
        self._latest: tuple[int, list[ViewRequest]] | None = None
        self._cached_busy = self._dirty = self._closed = False
        self.paused = False  # hidden: results are dropped

    # -- scheduling ------------------------------------------------------------------------------------------
    def schedule(self) -> None:
        """Draw the current views: now (the frame then shares the repaint of the control that changed it), and
        once more when the event-loop turn is over if more changes came in it."""
        if self.model.image is None or self._closed or self.paused:
            return
        if self._kick.isActive():
            return  # drawn again when this turn is over
        self._kick.start()
        self._render()

    def _render_again(self) -> None:
        if (self.model.revision, self._view_state()) != self._drawn:
            self._render()

    def idle(self) -> bool:
        """Nothing pending: no timer running and no frame being computed."""
        busy = self.workers.running("cached") or self.workers.running("exact")
        return not (self._kick.isActive() or self._exact_timer.isActive() or busy)

    def _render(self) -> None:
        model, view = self.model, self._view_state()
        if model.image is None or view is None:  # 3D: napari draws the lattice; nothing to compute
            return
        self._drawn = (model.revision, view)
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
                yield ("grid", generation, grid, deformed_grid(model.image, grid.plane, grid.shape))
            if not known:
                yield ("display", comp, display_for(model.image.kind, comp, model.volume(comp)))

        if known and grid is None and _fast_points(requests, lattice.spacing_mm) <= INLINE_POINTS:
            for item in job():  # a few ms: drawn in this event-loop turn, so one repaint shows it with the control
                self._deliver(item)
            return
        self._cached_busy = True
        self._launch(job, "cached", generation, done=self._cached_done)

    def _cached_done(self) -> None:
        self._cached_busy = False
        # not while hidden (results are dropped; showing draws the newest view again): a viewer closing hides the
        # widget, and a worker's last signal could arrive after Qt had deleted the pools (a CI run: RuntimeError,
        # QThreadPool deleted)
        if self._dirty and not self._closed and not self.paused:
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
                yield ("grid", generation, grid, deformed_grid(model.image, grid.plane, grid.shape))

        self._launch(job, "exact", generation)

    def _grid_request(self, requests: Iterable[ViewRequest]) -> ViewRequest | None:
        if not (self.model.controls.grid and self.model.image.kind == "displacement"):
            return None
        return next((r for r in requests if r.key == MAIN), None)

    # -- background lattice work -----------------------------------------------------------------------------
    def build_jacobian(self) -> None:
        """det(I + du/dx) on the lattice, in the background; the views are drawn again when it is there."""
        if self.workers.running("aux"):
            return
        image, lattice = self.model.image, self.model.lattice

        def job() -> Generator[Any, None, None]:
            yield from jacobian_steps(image, lattice)  # adds det(I + du/dx) to the lattice, a slab at a time
            yield ("lattice", image)

        self._launch(job, "aux", None)

    def prepare_volume(self) -> None:
        """The lattice volume of the shown component (3D), and its display, in the background."""
        model, comp = self.model, self.model.component
        if not model.lattice_ready():
            if comp == "jacobian" and model.lattice is not None:
                self.build_jacobian()  # lattice_changed follows; the volume is asked for again then
            return

        def job() -> Generator[Any, None, None]:
            volume = model.volume(comp)
            if model.window.displays.get(comp) is None:
                yield ("display", comp, display_for(model.image.kind, comp, volume))
            yield ("volume", comp)

        self._launch(job, "aux", None)

    # -- results -------------------------------------------------------------------------------------------
    def _launch(self, job: Callable[[], Generator], kind: str, generation: int | None, done: Any = None) -> None:
        on_error = lambda exc, g=generation: self._error(g, exc)  # noqa: E731
        self.workers.launch(job, kind, self._deliver, on_error, done)

    def _deliver(self, item: Any) -> None:
        if self._closed or self.paused or not isinstance(item, (Frame, tuple)):
            return  # progress fractions and band markers only let a worker stop between steps
        if isinstance(item, Frame):
            self.frame.emit(item)
        elif item[0] == "grid":
            if self.model.log.is_current(item[1]) and self.model.controls.grid:
                self.grid.emit(item[2], item[3])
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
        self.workers.cancel(kind, wait)

    def shutdown(self) -> None:
        """Stop timers and workers and wait for the threads; nothing is delivered afterwards."""
        self._kick.stop()
        self._exact_timer.stop()
        self._closed = True
        self.cancel(wait=True)


class Workers:
    """One one-thread pool per kind of work, and the workers in flight (each can be stopped between steps)."""

    def __init__(self, parent: QObject) -> None:
        self.pools = {kind: _pool(parent) for kind in KINDS}
        self.active: list[tuple[Any, threading.Event, str]] = []

    def running(self, kind: str) -> bool:
        return any(k == kind for _, _, k in self.active)

    def launch(self, job: Callable[[], Generator], kind: str, on_item: Any, on_error: Any, done: Any = None) -> None:
        """Run ``job`` in a worker of pool ``kind``; each item it yields goes to ``on_item`` on the main thread."""
        stop = threading.Event()

        def work() -> Generator[Any, None, None]:
            yield from stoppable(job(), stop)

        worker = thread_worker(work, start_thread=False)()
        worker.yielded.connect(on_item)
        worker.errored.connect(on_error)
        entry = (worker, stop, kind)

        def finished() -> None:
            if entry in self.active:
                self.active.remove(entry)
            if done is not None:
                done()

        worker.finished.connect(finished)
        self.active.append(entry)  # a reference until Qt has delivered its last signal
        self.pools[kind].start(worker)

    def cancel(self, kind: str | None = None, wait: bool = False) -> None:
        """Stop the workers of ``kind`` (all when None); with ``wait``, until their threads have finished."""
        for worker, stop, k in list(self.active):
            if kind is None or k == kind:
                stop.set()
                worker.quit()
        if wait:
            for k, pool in self.pools.items():
                if kind is None or k == kind:
                    pool.waitForDone(10000)


def _fast_points(requests: Iterable[ViewRequest], lattice_step_mm: float) -> int:
    return sum(int(np.prod(fast_request(r, lattice_step_mm).shape)) for r in requests)


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
