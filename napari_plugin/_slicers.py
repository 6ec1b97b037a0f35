"""The slicers open in this process, by viewer (held weakly): a checkpoint opened while a viewer's slicer runs is
handed to that slicer instead of being added as a volume layer that it would set aside at once (which made napari
build, then tear down, a 3D layer's controls and dims slider on the main thread)."""

from __future__ import annotations

import weakref
from typing import Any

_OPEN: "weakref.WeakSet[Any]" = weakref.WeakSet()


def register(slicer: Any) -> None:
    _OPEN.add(slicer)


def unregister(slicer: Any) -> None:
    _OPEN.discard(slicer)


def for_viewer(viewer: Any) -> Any:
    """The slicer shown in ``viewer`` (None: none, or it is hidden)."""
    return next((s for s in list(_OPEN) if s.viewer is viewer and s.isVisible()), None)
