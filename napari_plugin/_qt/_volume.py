"""The 3D view: the cached lattice volume-rendered and the current plane in place, kept in step with the controls.

napari draws both on the GPU from the same lattice (the plane with its "plane" depiction), so nothing is computed
per plane change; dragging the plane in the canvas (Shift-drag, napari's own) moves the offset box with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medinr.render import Plane
from napari_plugin._layer_book import CONTEXT_LAYER, VOLUME_LAYER
from napari_plugin._qt._layers import OWN, SliceLayers
from napari_plugin._slicer_model import SlicerModel


class VolumeView:
    """The 3D layers of one slicer."""

    def __init__(self, viewer: Any, model: SlicerModel, layers: SliceLayers) -> None:
        self.viewer, self.model, self.layers = viewer, model, layers
        self._moving = False  # True while the slicer itself moves the plane
        self.shown: Any = None  # (lattice, component) of the volume on screen

    def current(self) -> bool:
        """True if the volume on screen is the lattice and component the model shows (only the plane may move)."""
        return self.shown == (id(self.model.lattice), self.model.component)

    def show(self, volume: np.ndarray | None) -> bool:
        """Put ``volume`` (the lattice of the shown component) and the current plane on screen; False if the
        layers are not there yet and no volume was given to make them."""
        model = self.model
        if model.lattice is None or model.image is None or model.image.ndim != 3:
            return False
        made = [self.layers.layer(n) for n in (VOLUME_LAYER, CONTEXT_LAYER)]
        if volume is None and None in made:
            return False
        if volume is not None:
            self.shown = (id(model.lattice), model.component)
        plane = self.plane_in_data(model.base_plane())
        common = {"affine": model.lattice.geometry.affine, "units": ("mm",) * 3, "metadata": dict(OWN)}
        extras = (
            {"rendering": "attenuated_mip", "opacity": 0.5},
            {"depiction": "plane", "plane": plane, "blending": "translucent"},
        )
        changed = False
        for i, name in enumerate((VOLUME_LAYER, CONTEXT_LAYER)):
            if made[i] is None:
                made[i] = self.viewer.add_image(volume, name=name, **common, **extras[i])
                if name == CONTEXT_LAYER:
                    made[i].plane.events.position.connect(self._on_plane_dragged)
                changed = True
            elif volume is not None and made[i].data is not volume:
                made[i].data = volume
                made[i].affine = model.lattice.geometry.affine
                changed = True
        self._moving = True
        try:
            made[1].plane.position, made[1].plane.normal = plane["position"], plane["normal"]
        finally:
            self._moving = False
        if changed:
            self.layers.apply_display()
        return True

    def plane_in_data(self, base: Plane) -> dict:
        """Position and normal of ``base`` in the lattice layer's data (voxel) coordinates."""
        affine = self.model.lattice.geometry.affine  # type: ignore[union-attr]
        position = np.linalg.solve(affine[:3, :3], base.centre - affine[:3, 3])
        normal = affine[:3, :3].T @ base.normal  # normals transform by the transposed linear part
        return {"position": tuple(position), "normal": tuple(normal / np.linalg.norm(normal)), "thickness": 1.0}

    def _on_plane_dragged(self, event: Any = None) -> None:
        """The plane was moved in the 3D canvas: the offset takes the move along the normal."""
        layer = self.layers.layer(CONTEXT_LAYER)
        if self._moving or layer is None or self.model.image is None or self.model.lattice is None:
            return
        base = self.model.base_plane()
        affine = self.model.lattice.geometry.affine
        world = affine[:3, :3] @ np.asarray(layer.plane.position) + affine[:3, 3]
        self.model.update(offset_mm=self.model.controls.offset_mm + float((world - base.centre) @ base.normal))
