"""Latency of the napari slicer in a real window (run under Xvfb), as a user meets it; used by ``render.py``.

Everything runs inside Qt's event loop, as in ``napari.run()`` (a loop pumped by ``processEvents`` never deletes
napari's finished progress bars, so its "in progress" animation keeps repainting the window and inflates every
figure). Actions are posted to the loop as a user's would be: spin-box changes, mouse events on the canvas,
``viewer.open``. What is measured:

- main-thread work: wall time the main thread spends handling events (between Qt's ``awake`` and
  ``aboutToBlock``) from a plane change until its exact frame is on screen, without the time spent repainting
  windows (reported apart: with a software OpenGL driver one repaint of the window costs 10-20 ms);
- first frame / exact frame: from the change until the repaint that first shows a frame of the new plane
  (cached, then exact);
- event-loop gap: the longest interval between ticks of a 5 ms timer (a drag of 25 mouse moves at 60 Hz; a
  cold open, from ``viewer.open`` until the full lattice and the exact frame are on screen).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Canvas size (h, w) in screen pixels of the measurements (the issue's 910 x 606 canvas).
CANVAS_HW = (606, 910)


@dataclass
class Probe:
    """Main-thread accounting: every event Qt delivers (top level only), window repaints, and a 5 ms ticker.

    Install it before napari makes the QApplication (:func:`make_app`): the application's ``notify`` times each
    event handled on the main thread, which is all the work the main thread does in an event loop.
    """

    busy: list[tuple[float, float]] = field(default_factory=list)
    paints: list[tuple[float, float]] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    harness: set[int] = field(default_factory=set)  # ids of the probe's own timers (not counted as work)
    long: list[tuple[float, float, str, str]] = field(default_factory=list)  # events that took over 30 ms

    def start_ticker(self) -> None:
        from qtpy.QtCore import QTimer

        self._ticker = QTimer()
        self._ticker.setInterval(5)
        self._ticker.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self._ticker.start()
        self.harness.add(id(self._ticker))

    def busy_between(self, t0: float, t1: float) -> tuple[float, float]:
        """(main-thread busy time, of which window repaints) within [t0, t1], seconds."""
        return _overlap(self.busy, t0, t1), _overlap(self.paints, t0, t1)

    def max_gap(self, t0: float, t1: float) -> float:
        ticks = [t for t in self.ticks if t0 <= t <= t1]
        return float(np.max(np.diff([t0, *ticks, t1]))) if ticks else t1 - t0

    def first_paint_after(self, t: float) -> float | None:
        return next((end for start, end in self.paints if start >= t), None)

    def paints_between(self, t0: float, t1: float) -> int:
        return sum(1 for start, _ in self.paints if t0 <= start <= t1)


PROBE = Probe()


def make_app() -> Any:
    """The QApplication, with :data:`PROBE` timing every event (call before napari makes one)."""
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    main = threading.get_ident()

    class TimedApplication(QApplication):
        depth = 0  # nesting on the main thread (events sent from within a handler are part of its time)

        def notify(self, receiver: Any, event: Any) -> bool:
            if threading.get_ident() != main or TimedApplication.depth or id(receiver) in PROBE.harness:
                return super().notify(receiver, event)
            TimedApplication.depth += 1
            kind, start = event.type(), time.perf_counter()
            try:
                return super().notify(receiver, event)
            finally:
                TimedApplication.depth -= 1
                end = time.perf_counter()
                PROBE.busy.append((start, end))
                if end - start > 0.03:
                    PROBE.long.append((start, end, type(receiver).__name__, str(kind)))
                if kind == QEvent.Type.UpdateRequest and _is_window(receiver):  # a repaint of a whole window
                    PROBE.paints.append((start, end))

    app = QApplication.instance() or TimedApplication([])
    _APP.append(app)  # the application must outlive this call (its Python owner frees it otherwise)
    PROBE.start_ticker()
    return app


_APP: list[Any] = []


def _is_window(receiver: Any) -> bool:
    """Whether ``receiver`` is a top-level window (False for a widget deleted while its event was delivered)."""
    from qtpy.QtGui import QWindow
    from qtpy.QtWidgets import QWidget

    try:
        return isinstance(receiver, QWindow) or (isinstance(receiver, QWidget) and receiver.isWindow())
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
        return False


def _overlap(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
    return float(sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in intervals))


def run_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Run Qt's event loop until ``condition()`` (polled every 10 ms) or ``timeout`` seconds."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop, end = QEventLoop(), time.perf_counter() + timeout
    poll = QTimer()
    PROBE.harness.add(id(poll))
    poll.setInterval(10)
    poll.timeout.connect(lambda: loop.quit() if condition() or time.perf_counter() > end else None)
    poll.start()
    loop.exec()
    poll.stop()
    # An id is only unique while its object lives: a freed timer's id, left in the set, was taken by the
    # short-lived wrapper that Qt's events give napari's window, and every repaint of a later viewer was then
    # skipped as the harness's own (the "0 repaints" rows of earlier releases).
    PROBE.harness.discard(id(poll))
    return condition()


def post(action: Callable[[], Any]) -> float:
    """Run ``action`` from the event loop (as a user's input is); returns the time it ran."""
    from qtpy.QtCore import QTimer

    when: list[float] = []
    QTimer.singleShot(0, lambda: (when.append(time.perf_counter()), action()))
    run_until(lambda: bool(when), 10.0)
    return when[0]


# -- a viewer with the slicer --------------------------------------------------------------------------------
def slice_widget_class() -> Any:
    try:
        from napari_plugin._qt import SliceWidget
    except ImportError:  # the viewer before the split (to measure "before")
        from napari_plugin._widget import SliceWidget
    return SliceWidget


def idle(widget: Any) -> bool:
    if hasattr(widget, "idle"):
        return widget.idle()
    return not (widget._debounce.isActive() or any(w.is_running for w, _ in widget._workers))


def viewer_with_slicer() -> tuple[Any, Any]:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    widget = slice_widget_class()(viewer)
    viewer.window.add_dock_widget(widget)
    run_until(lambda: False, 0.5)
    h, w = viewer.canvas.size
    viewer.window.resize(1400 + CANVAS_HW[1] - int(w), 900 + CANVAS_HW[0] - int(h))
    run_until(lambda: False, 0.5)
    return viewer, widget


def frames(widget: Any) -> tuple[int, int]:
    return widget.model.fast_count, widget.model.exact_count


def settle(widget: Any, timeout: float = 60.0) -> None:
    n = frames(widget)[1]
    run_until(lambda: idle(widget) and frames(widget)[1] >= max(n, 1), timeout)
    run_until(lambda: False, 0.3)


# -- measurements --------------------------------------------------------------------------------------------
def plane_changes(probe: Probe, widget: Any, count: int = 10) -> dict[str, list[float]]:
    """``count`` plane changes (see :func:`_change`), each one left to finish: per change, seconds."""
    out: dict[str, list[float]] = {k: [] for k in ("work", "paint", "first", "exact", "exact_compute", "repaints",
                                                   "exact_preset", "exact_tilted")}
    for i in range(count):
        settle(widget)
        exact0 = frames(widget)[1]
        t0 = post(_change(widget, i))
        run_until(lambda n=exact0: frames(widget)[1] > n and idle(widget), 60.0)
        run_until(lambda: False, 0.1)  # the repaint that shows it
        t_exact = _time_shown(widget, probe, t0, exact=True)
        t_first = _time_shown(widget, probe, t0, exact=False)
        busy, paint = probe.busy_between(t0, t_exact)
        out["work"].append(busy - paint)
        out["paint"].append(paint)
        out["first"].append(t_first - t0)
        out["exact"].append(t_exact - t0)
        if widget.model.image.ndim == 3:  # a preset's plane (no tilt: scrolling through slices) or a tilted one
            out["exact_tilted" if any(widget.model.controls.tilt_deg) else "exact_preset"].append(t_exact - t0)
        out["exact_compute"].append(widget.model.shown.seconds)
        out["repaints"].append(probe.paints_between(t0, t_exact))
    return out


def _change(widget: Any, i: int) -> Callable[[], Any]:
    """The i-th change: offset and tilt by turns (3D), a pan of 10 mm (2D, whose plane is fixed)."""
    sign = 1.0 if i % 4 < 2 else -1.0
    if widget.model.image.ndim == 3:
        spin, step = (widget.offset, 3.0) if i % 2 == 0 else (widget.tilt_col, 4.0)
        value = spin.value() + sign * step
        return lambda: spin.setValue(value)
    camera = widget.camera
    center = list(camera.center)
    center[-1] += sign * 10.0
    return lambda: setattr(camera, "center", tuple(center))


def _time_shown(widget: Any, probe: Probe, t0: float, exact: bool) -> float:
    """When the first frame accepted after ``t0`` reached the screen (the end of the next window repaint)."""
    accepted = _ACCEPTED[id(widget)]
    when = next((t for tier, t in accepted if t >= t0 and (tier == "exact" or not exact)), None)
    painted = probe.first_paint_after(when) if when is not None else None
    return painted if painted is not None else time.perf_counter()


_ACCEPTED: dict[int, list[tuple[str, float]]] = {}


def watch_frames(widget: Any) -> None:
    """Record when each frame is accepted (it is set on its layer in the same slot)."""
    model, accepted = widget.model, []
    _ACCEPTED[id(widget)] = accepted
    original = model.accept

    def accept(*args: Any, **kwargs: Any) -> bool:
        ok = original(*args, **kwargs)
        if ok:
            accepted.append((args[1], time.perf_counter()))
        return ok

    model.accept = accept


def shift_drag(probe: Probe, viewer: Any, widget: Any, steps: int = 25, interval_ms: int = 16) -> dict[str, float]:
    """A Shift-drag of ``steps`` mouse moves at 60 Hz on the canvas: the longest event-loop gap (s) meanwhile."""
    from qtpy.QtCore import QEvent, QPointF, Qt, QTimer
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    settle(widget)
    canvas = viewer.window._qt_viewer.canvas.native
    x, y = canvas.width() / 2, canvas.height() / 2
    fast0 = frames(widget)[0]
    mods, left = Qt.KeyboardModifier.ShiftModifier, Qt.MouseButton.LeftButton

    def send(kind: Any, dy: float, buttons: Any) -> None:
        pos = QPointF(x, y - dy)
        event = QMouseEvent(kind, pos, canvas.mapToGlobal(pos), left, buttons, mods)
        QApplication.sendEvent(canvas, event)

    moves = iter(range(1, steps + 1))
    done: list[float] = []

    def step() -> None:
        i = next(moves, None)
        if i is None:
            send(QEvent.Type.MouseButtonRelease, 4.0 * steps, Qt.MouseButton.NoButton)
            done.append(time.perf_counter())
            timer.stop()
        else:
            send(QEvent.Type.MouseMove, 4.0 * i, left)

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(step)
    t0 = post(lambda: send(QEvent.Type.MouseButtonPress, 0.0, left))
    timer.start()
    run_until(lambda: bool(done), 30.0)
    t1 = done[0]
    settle(widget)
    return {"gap": probe.max_gap(t0, t1), "frames": frames(widget)[0] - fast0, "seconds": t1 - t0}


def cold_open(probe: Probe, viewer: Any, widget: Any, path: str) -> dict[str, float]:
    """Open ``path`` (its lattice cache removed beforehand) with the slicer docked: the longest event-loop gap
    until the full lattice is in and the exact frame of it is on screen, and how long that took (s)."""
    before = frames(widget)[1]
    t0 = post(lambda: viewer.open(path, plugin="medinr"))

    def ready() -> bool:
        from napari_plugin import _lattices

        image = widget.model.image
        final = image is not None and _lattices.is_final(image) and widget.model.lattice is _lattices.current(image)
        return final and idle(widget) and frames(widget)[1] > before

    run_until(ready, 120.0)
    t1 = time.perf_counter()
    return {"gap": probe.max_gap(t0, t1), "seconds": t1 - t0}


def summary(values: list[float]) -> tuple[float, float]:
    """(median, worst) in ms."""
    return statistics.median(values) * 1000, max(values) * 1000


def measure(path: str, changes: int = 10, drag: bool = True) -> dict[str, Any]:
    """Cold open of ``path`` with the slicer docked, then plane changes and a Shift-drag (one fresh viewer)."""
    probe = PROBE
    viewer, widget = viewer_with_slicer()
    watch_frames(widget)
    result: dict[str, Any] = {"canvas": tuple(int(v) for v in viewer.canvas.size)}
    result["cold"] = cold_open(probe, viewer, widget, path)
    result["changes"] = plane_changes(probe, widget, changes)
    if drag and widget.model.image.ndim == 3:
        result["drag"] = shift_drag(probe, viewer, widget)
    lattice = widget.model.lattice
    result["lattice"] = (tuple(lattice.geometry.shape), lattice.spacing_mm)
    viewer.close()
    run_until(lambda: False, 0.3)
    return result


# -- the anchor: napari's own image layer --------------------------------------------------------------------
def napari_anchor(volume: np.ndarray, changes: int = 10, steps: int = 25, interval_ms: int = 16) -> dict[str, Any]:
    """The same figures for napari's own image layer of ``volume`` (a 3D array, axial slices by the dims slider)
    in a fresh viewer with the slicer docked (the same canvas): the floor that napari and the OpenGL driver set.

    - cold: ``viewer.add_image(volume)`` until its first slice is on screen (longest event-loop gap);
    - per change: a slice step (``dims.set_point``) until the repaint that shows it: main-thread work without the
      window repaints, and when it is on screen;
    - drag: ``steps`` slice steps at 60 Hz (longest event-loop gap).
    """
    from qtpy.QtCore import QTimer

    probe = PROBE
    viewer, widget = viewer_with_slicer()
    out: dict[str, Any] = {"canvas": tuple(int(v) for v in viewer.canvas.size)}
    t0 = post(lambda: viewer.add_image(volume, name="napari's own"))
    run_until(lambda: probe.first_paint_after(t0) is not None, 30.0)
    run_until(lambda: False, 0.3)
    out["cold"] = probe.max_gap(t0, probe.first_paint_after(t0))
    axis = 2  # the volume's last axis: axial slices of an RAS array
    middle = volume.shape[axis] // 2
    work, first = [], []
    for i in range(changes):
        run_until(lambda: False, 0.2)
        point = middle + (3 if i % 2 == 0 else -3)
        t = post(lambda p=point: viewer.dims.set_point(axis, p))
        run_until(lambda t=t: probe.first_paint_after(t) is not None, 10.0)
        shown = probe.first_paint_after(t)
        busy, paint = probe.busy_between(t, shown)
        work.append(busy - paint)
        first.append(shown - t)
    out["work"], out["first"] = work, first
    run_until(lambda: False, 0.3)
    moves, done = iter(range(1, steps + 1)), []

    def step() -> None:
        i = next(moves, None)
        if i is None:
            done.append(time.perf_counter())
            timer.stop()
        else:
            viewer.dims.set_point(axis, middle - steps // 2 + i)

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(step)
    start = post(timer.start)
    run_until(lambda: bool(done), 30.0)
    run_until(lambda: False, 0.1)
    out["drag"] = probe.max_gap(start, done[0])
    viewer.close()
    run_until(lambda: False, 0.3)
    return out
