"""Layer bookkeeping without Qt: the slicer's own layers, and which of the viewer's layers it sets aside.

While the slicer runs, the canvas is in canvas millimetres (2D) or shows the slicer's own lattice volume (3D), so
*every* checkpoint volume layer is set aside ("parked") as soon as it appears, whichever checkpoint is sliced:
the slicer offers them all and shows the chosen one in its own layers; they return, in their order, when the
slicer closes. Decisions are made here on plain descriptions of layers, and carried out by the Qt side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from napari_plugin._layers import CHECKPOINT_KEY, ROLE_KEY
from napari_plugin._viewport import MAIN

SLICE_LAYER = "medinr slice"
CONTEXT_LAYER = "medinr plane 3D"
VOLUME_LAYER = "medinr volume 3D"
GRID_LAYER = "medinr deformed grid"
CROSSHAIR_LAYER = "medinr crosshair"
LABELS_LAYER = "medinr orientation"
PREFIX = "medinr "


def tile_layer(key: str) -> str:
    """Name of the image layer of view ``key``."""
    return SLICE_LAYER if key == MAIN else f"{SLICE_LAYER} {key}"


def is_own(name: str, metadata: Mapping[str, Any]) -> bool:
    """True for a layer the slicer made (it marks them in their metadata)."""
    return bool(metadata.get("medinr_slicer")) and name.startswith(PREFIX)


def is_source(metadata: Mapping[str, Any]) -> bool:
    """True for a checkpoint's volume layer (what the reader and the sample add)."""
    return CHECKPOINT_KEY in metadata and metadata.get(ROLE_KEY) == "volume"


@dataclass(frozen=True)
class Wanted:
    """The slicer's layers for a display mode, bottom to top."""

    images: tuple[str, ...]
    grid: bool
    crosshair: bool

    @property
    def names(self) -> tuple[str, ...]:
        linked = (CROSSHAIR_LAYER, LABELS_LAYER) if self.crosshair else ()
        return (*self.images, *((GRID_LAYER,) if self.grid else ()), *linked)


def wanted(ndisplay: int, keys: Iterable[str], grid: bool, linked: bool) -> Wanted:
    """Own layers of a mode: one image per view in 2D (with the deformed grid when asked; linked views add their
    crosshair and orientation letters), the lattice volume and the plane in place in 3D."""
    if ndisplay == 3:
        return Wanted((VOLUME_LAYER, CONTEXT_LAYER), False, False)
    return Wanted(tuple(tile_layer(k) for k in keys), grid, linked)


def own_to_remove(present: Iterable[tuple[str, Mapping[str, Any]]], want: Wanted) -> list[str]:
    """Own layers present that the mode does not want."""
    return [name for name, meta in present if is_own(name, meta) and name not in want.names]


def to_park(present: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Checkpoint volume layers present in the viewer: all are set aside while the slicer runs."""
    return [name for name, meta in present if is_source(meta) and not is_own(name, meta)]
