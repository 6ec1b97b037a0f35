"""npe2 readers: a ``.inr`` checkpoint opens as its cached lattice (a volume in RAS mm); a NIfTI image opens
at its world position (nibabel, affine kept), so pipeline outputs sit beside the INR they came from."""

from __future__ import annotations

from collections.abc import Callable

from medinr.continuous import ContinuousImage
from medinr.render import CachedLattice
from napari_plugin import _lattices
from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY, ROLE_KEY, LayerData, nifti_layers, open_checkpoint
from napari_plugin._slicer_model import display_for

Reader = Callable[[str | list[str]], list[LayerData]]
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _paths(path: str | list[str]) -> list[str]:
    return [path] if isinstance(path, str) else [str(p) for p in path]


def get_reader(path: str | list[str]) -> Reader | None:
    """The checkpoint reader for ``.inr`` files, ``None`` for anything else (napari then asks other plugins)."""
    paths = _paths(path)
    if not paths or not all(p.lower().endswith(".inr") for p in paths):
        return None
    return read_checkpoints


def get_nifti_reader(path: str | list[str]) -> Reader | None:
    """The NIfTI reader for ``.nii``/``.nii.gz`` files, ``None`` for anything else."""
    paths = _paths(path)
    if not paths or not all(p.lower().endswith(NIFTI_SUFFIXES) for p in paths):
        return None
    return read_nifti


def read_nifti(path: str | list[str]) -> list[LayerData]:
    """Layer data for NIfTI files; an unreadable file raises MedinrError with a one-line message."""
    return [layer for p in _paths(path) for layer in nifti_layers(p)]


def read_checkpoints(path: str | list[str]) -> list[LayerData]:
    """Layer data for checkpoints; a damaged file raises MedinrError with a one-line message.

    A checkpoint whose full lattice would take long to build opens with a preview lattice; the full one is
    then built in the background (when a Qt application runs) and replaces it in the current viewer.
    """
    layers: list[LayerData] = []
    for p in _paths(path):
        opened = open_checkpoint(p)
        _lattices.offer(opened.image, opened.lattice, final=opened.final, path=p)
        if not opened.final and _qt_running():
            _lattices.listen(opened.image, _replace_preview)
            _lattices.ensure(opened.image, p)
        layers += opened.layers
    return layers


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
        meta = layer.metadata
        if meta.get(CHECKPOINT_KEY) is image and meta.get(ROLE_KEY) == "volume" and meta.get("medinr_pending"):
            volume = lattice.volume("auto")
            shown = display_for(image.kind, "auto", volume)
            meta[AFFINE_KEY] = lattice.geometry.affine
            meta["medinr_pending"] = False
            layer.data = volume
            layer.affine = lattice.geometry.affine
            layer.contrast_limits = shown.contrast_limits
