"""The cached lattice of every open checkpoint, built once in a background thread and shared by all views.

The reader offers a first (possibly coarse) lattice when a checkpoint opens; :func:`ensure` then builds the
full one in a napari ``thread_worker`` (in bounded memory, a slab at a time, then written to the cache file
beside the checkpoint) and tells the listeners on the main thread when it is ready. Listeners are held
weakly, so a closed widget is never kept alive or called.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.render import CachedLattice, cache_path_for, plan_lattice, save_lattice
from medinr.render.lattice import CACHE_SUFFIX, file_sha256, lattice_steps

Listener = Callable[[ContinuousImage, CachedLattice], None]


@dataclass(eq=False)
class _Entry:
    lattice: CachedLattice | None = None
    final: bool = False
    path: str | None = None
    worker: Any = None
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    listeners: list[Any] = field(default_factory=list)


_ENTRIES: "weakref.WeakKeyDictionary[ContinuousImage, _Entry]" = weakref.WeakKeyDictionary()


def cache_dir() -> Path:
    """``$MEDINR_CACHE``, else ``$XDG_CACHE_HOME/medinr``, else ``~/.cache/medinr``."""
    import os

    if os.environ.get("MEDINR_CACHE"):
        return Path(os.environ["MEDINR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medinr"


#: The plugin's own data (the shipped sample): its lattice goes to the user cache, never into the package.
PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def cache_file(path: str | None) -> Path | None:
    """The lattice cache of a checkpoint file: beside it, else (read-only folder, package data) in the user cache."""
    if path is None:
        return None
    fallback = cache_dir() / "lattices"
    if Path(path).resolve().parent == PACKAGE_DATA:
        return fallback / f"{file_sha256(path)}{CACHE_SUFFIX}"
    return cache_path_for(path, fallback)


def current(image: ContinuousImage) -> CachedLattice | None:
    """The best lattice of ``image`` so far (None: none yet)."""
    entry = _ENTRIES.get(image)
    return entry.lattice if entry is not None else None


def is_final(image: ContinuousImage) -> bool:
    entry = _ENTRIES.get(image)
    return bool(entry and entry.final)


def offer(image: ContinuousImage, lattice: CachedLattice, final: bool, path: str | None = None) -> None:
    """Record a lattice of ``image`` (``final``: the full one; else a preview that :func:`ensure` replaces)."""
    entry = _ENTRIES.setdefault(image, _Entry())
    if entry.final and not final:
        return
    entry.lattice, entry.final = lattice, final
    entry.path = path or entry.path
    if final:
        _notify(image, entry)


def listen(image: ContinuousImage, listener: Listener) -> None:
    """Call ``listener(image, lattice)`` on the main thread when the full lattice is ready (held weakly)."""
    entry = _ENTRIES.setdefault(image, _Entry())
    ref = weakref.WeakMethod(listener) if hasattr(listener, "__self__") else (lambda f=listener: f)
    entry.listeners.append(ref)


def ensure(image: ContinuousImage, path: str | None = None, geometry: Geometry | None = None) -> None:
    """Start building the full lattice (``geometry``, planned when the file opened) in the background unless it
    exists or is being built; a checkpoint file's lattice is then written to its cache file."""
    from napari.qt.threading import thread_worker

    entry = _ENTRIES.setdefault(image, _Entry())
    entry.path = path or entry.path
    if entry.final or entry.worker is not None:
        return
    entry.stop, entry.done = threading.Event(), threading.Event()
    stop, done, where = entry.stop, entry.done, entry.path

    def steps():
        try:
            result = yield from stoppable(full_lattice_steps(image, where, geometry), stop)
            return result
        finally:
            done.set()

    worker = thread_worker(steps, start_thread=False)()
    _stop_at_quit()
    ref = weakref.ref(image)
    worker.returned.connect(lambda lattice: _finished(ref(), lattice))
    entry.worker = worker
    _start_later(worker, stop, done)


#: The full lattice's build starts this long after it is asked for (ms): the opening's own main-thread work
#: (napari's layer, the first repaints) comes first. Started at once, the build's torch threads took both cores
#: from it: the longest event-loop gap of a cold open 0.20 s, 0.15-0.18 s with the start put off.
START_DELAY_MS = 500


_QUIT_HOOK: list[Any] = []


def _stop_at_quit() -> None:
    """Have the application stop every build before it quits (once): a build left running when Qt's event loop
    ends is aborted in the middle of its network evaluations, or keeps the process alive until it finishes."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None and app not in _QUIT_HOOK:
        app.aboutToQuit.connect(stop_all)
        _QUIT_HOOK.append(app)


def _start_later(worker: Any, stop: threading.Event, done: threading.Event) -> None:
    from qtpy.QtCore import QTimer

    def start() -> None:
        if stop.is_set():  # stopped before it began (stop_all): nothing will run
            done.set()
        else:
            worker.start()

    QTimer.singleShot(START_DELAY_MS, start)


def full_lattice_steps(
    image: ContinuousImage, path: str | None, geometry: Geometry | None
) -> Generator[float, None, CachedLattice]:
    """Build ``geometry`` (default: :func:`plan_lattice`) and, for a checkpoint file, write its cache file."""
    lattice = yield from lattice_steps(image, geometry if geometry is not None else plan_lattice(image))
    if path is not None:
        lattice.checkpoint_sha256 = file_sha256(path)
        try:
            save_lattice(cache_file(path), lattice)  # type: ignore[arg-type]
        except (OSError, MedinrError):
            pass  # a read-only place, a full disk: the lattice still lives in memory
    return lattice


def stoppable(gen: Any, stop: threading.Event) -> Any:
    """Pass on ``gen``'s steps until ``stop`` is set; return its value (None when stopped)."""
    while not stop.is_set():
        try:
            value = next(gen)
        except StopIteration as end:
            return end.value
        yield value
    gen.close()
    return None


def _finished(image: ContinuousImage | None, lattice: CachedLattice | None) -> None:
    if image is None or lattice is None:
        return
    entry = _ENTRIES.get(image)
    if entry is None:
        return
    entry.worker = None
    offer(image, lattice, final=True)


def _notify(image: ContinuousImage, entry: _Entry) -> None:
    alive = []
    for ref in entry.listeners:
        fn = ref()
        if fn is not None:
            alive.append(ref)
            fn(image, entry.lattice)
    entry.listeners = alive


def stop_all(timeout: float = 5.0) -> None:
    """Stop every background build and wait for the threads (before a viewer or the application closes)."""
    entries = [e for e in list(_ENTRIES.values()) if e.worker is not None]
    for e in entries:
        e.stop.set()  # the build's generator returns at its next slab (a napari quit() would leave it suspended)
        if not e.worker.is_running and not e.done.is_set():  # its start is still ahead (START_DELAY_MS)
            e.done.set()
    for e in entries:
        e.done.wait(timeout)
        e.worker = None
