"""npe2 readers: a ``.inr`` checkpoint opens as its cached lattice (a volume in RAS mm); a NIfTI image opens
at its world position (nibabel, affine kept), so pipeline outputs sit beside the INR they came from.

A file medinr cannot read gives *one* line, ours (``medinr: ... is not a medinr checkpoint ...``), as an error
notification, and no layer: napari's generic "Tried to read ... gave an error" would hide it behind "View
Traceback". napari's own reader also claims ``.nii``/``.nii.gz`` (through imageio, without the affine), which made
napari ask "Choose reader" at every NIfTI: once medinr is in use, it registers itself as the NIfTI reader in
napari's preferences, unless the user already chose one there (Preferences > Plugins changes it back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medinr.checkpoint import load_checkpoint
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.render import CachedLattice
from napari_plugin import _lattices
from napari_plugin._layers import (
    AFFINE_KEY,
    CHECKPOINT_KEY,
    ROLE_KEY,
    LayerData,
    Opened,
    nifti_layers,
    open_checkpoint,
    open_loaded,
)
from napari_plugin._window import display_for

Reader = Callable[[str | list[str]], list[LayerData]]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_PATTERNS = ("*.nii", "*.nii.gz")
#: What napari takes for "this file holds no layers" (no error dialog, no layer).
NO_LAYERS: list[Any] = [(None,)]


def _paths(path: str | list[str]) -> list[str]:
    return [path] if isinstance(path, str) else [str(p) for p in path]


def get_reader(path: str | list[str]) -> Reader | None:
    """The checkpoint reader for ``.inr`` files, ``None`` for anything else (napari then asks other plugins)."""
    paths = _paths(path)
    if not paths or not all(p.lower().endswith(".inr") for p in paths):
        return None
    return _one_line_errors(read_checkpoints_for_napari)


def get_nifti_reader(path: str | list[str]) -> Reader | None:
    """The NIfTI reader for ``.nii``/``.nii.gz`` files, ``None`` for anything else."""
    paths = _paths(path)
    if not paths or not all(p.lower().endswith(NIFTI_SUFFIXES) for p in paths):
        return None
    return _one_line_errors(read_nifti)


def _one_line_errors(read: Reader) -> Reader:
    """``read`` with a MedinrError shown as our one line (an error notification) instead of raised to napari."""

    def reader(path: str | list[str]) -> list[LayerData]:
        prefer_medinr_for_nifti()
        try:
            return read(path)
        except MedinrError as exc:
            _show_one_line(exc)
            return NO_LAYERS

    return reader


def prefer_medinr_for_nifti() -> None:
    """Make medinr napari's reader of ``.nii``/``.nii.gz`` unless the user chose a reader for them."""
    try:
        from napari.settings import get_settings
    except ImportError:  # napari is not installed: the readers are used as plain functions
        return
    plugins = get_settings().plugins
    mapping = dict(plugins.extension2reader)
    missing = [p for p in NIFTI_PATTERNS if p not in mapping]
    if missing:
        plugins.extension2reader = {**mapping, **dict.fromkeys(missing, "medinr")}


def activate(context: Any = None) -> None:
    """npe2 activation (the first time a medinr reader, widget or sample is used)."""
    prefer_medinr_for_nifti()


def read_nifti(path: str | list[str]) -> list[LayerData]:
    """Layer data for NIfTI files; an unreadable file raises MedinrError with a one-line message."""
    return [layer for p in _paths(path) for layer in nifti_layers(p)]


def read_checkpoints(path: str | list[str]) -> list[LayerData]:
    """Layer data for checkpoints; a damaged file raises MedinrError with a one-line message.

    A checkpoint whose full lattice is not in its cache opens with a preview lattice; the full one is then built
    in the background (when a Qt application runs) and replaces it in the current viewer.
    """
    layers: list[LayerData] = []
    background = _qt_running()
    for p in _paths(path):
        layers += _offered(open_checkpoint(p, background), p)
    return layers


def _offered(opened: Opened, path: str) -> list[LayerData]:
    """Record an opened checkpoint's first lattice (a preview: the full one is then built in the background)."""
    plan = opened.plan
    _lattices.offer(opened.image, plan.lattice, final=plan.final, path=path)
    if not plan.final:
        _lattices.listen(opened.image, _replace_preview)
        _lattices.ensure(opened.image, path, plan.full)
    return opened.layers


def read_checkpoints_for_napari(path: str | list[str]) -> list[LayerData]:
    """:func:`read_checkpoints` as napari's reader: with the slicer open in the current viewer, the checkpoints go
    to the slicer (their volume layers set aside from the start) and napari adds no layer.

    For the slicer, the file is read and checked here (a damaged one is our one line at once) and the rest of
    the opening, the speed probe and the preview lattice (about 0.1 s), runs in a thread: napari calls a reader
    on the main thread, inside its own progress bar, and the viewer would otherwise stand still meanwhile.
    """
    slicer = _current_slicer()
    if slicer is None:
        return read_checkpoints(path)
    _open_for(slicer, [(load_checkpoint(p, device="cpu"), p) for p in _paths(path)])
    return NO_LAYERS


def _open_for(slicer: Any, loaded: list[tuple[ContinuousImage, str]]) -> None:
    """Plan the lattices of the ``(image, path)`` pairs in a thread, then hand their volume layers to ``slicer``
    on the main thread, in the order given."""
    from napari.layers import Layer
    from napari.qt.threading import thread_worker

    def plan() -> list[tuple[Opened, str]] | tuple[MedinrError]:
        try:
            return [(open_loaded(image, path), path) for image, path in loaded]
        except MedinrError as exc:  # our one line, not napari's "View Traceback" of a worker's exception
            return (exc,)  # in a tuple: a worker that returns an exception raises it

    def handover(opened: list[tuple[Opened, str]] | tuple[MedinrError]) -> None:
        failed = isinstance(opened, tuple)
        if not slicer.deleted:
            slicer.opened(failed=failed)
        if failed:
            _show_one_line(opened[0])
            return
        if slicer.deleted:  # its viewer closed meanwhile: nothing to show, no full lattice to build
            return
        for one, path in opened:
            for data, meta, kind in _offered(one, path):
                layer = Layer.create(data, meta, kind)
                if slicer.closed:  # the slicer closed meanwhile: the checkpoint opens as it does without one
                    slicer.viewer.add_layer(layer)
                else:
                    slicer.adopt(layer)

    worker = thread_worker(plan, start_thread=False)()
    worker.returned.connect(handover)
    slicer.opening(worker)  # the slicer starts it


def _show_one_line(exc: MedinrError) -> None:
    from napari.utils.notifications import show_error

    show_error("medinr: " + " ".join(str(exc).split()))


def _current_slicer() -> Any:
    if not _qt_running():
        return None
    import napari

    from napari_plugin import _slicers

    viewer = napari.current_viewer()
    return None if viewer is None else _slicers.for_viewer(viewer)


def _qt_running() -> bool:
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # noqa: BLE001 - no Qt binding: no background thread either
        return False
    return QApplication.instance() is not None


def _replace_preview(image: ContinuousImage, lattice: CachedLattice) -> None:
    """Put the full lattice in place of the preview in the current viewer's volume layers of ``image``."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return
    for layer in list(viewer.layers):
        update_volume_layer(layer, image, lattice)


def update_volume_layer(layer: Any, image: ContinuousImage, lattice: CachedLattice) -> bool:
    """Show ``lattice`` in a preview volume layer of ``image`` (also one the slicer set aside); True if done."""
    meta = layer.metadata
    if not (meta.get(CHECKPOINT_KEY) is image and meta.get(ROLE_KEY) == "volume" and meta.get("medinr_pending")):
        return False
    volume = lattice.volume("auto")
    shown = display_for(image.kind, "auto", volume)
    meta[AFFINE_KEY] = lattice.geometry.affine
    meta["medinr_pending"] = False
    layer.data = volume
    layer.affine = lattice.geometry.affine
    layer.contrast_limits_range = shown.data_range
    layer.contrast_limits = shown.data_range
    return True
