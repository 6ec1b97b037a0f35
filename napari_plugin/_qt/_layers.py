"""The slicer's napari layers: checkpoint layers set aside and given back, one image per view, the deformed grid,
the crosshair, and the window on all of them (the decisions are :mod:`napari_plugin._layer_book`'s).

A frame reaches the canvas with as little main-thread work as napari allows: when the view's pixels did not move
(a plane change: offset, tilt, another component) the new values are copied into the layer's array and the layer
refreshed without recomputing its extent; only a camera move sets a new transform and new data.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np

from medinr.render import slice_geometry
from napari_plugin import _lattices
from napari_plugin import _layer_book as book
from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY
from napari_plugin._reader import update_volume_layer
from napari_plugin._slicer_model import SlicerModel
from napari_plugin._tiers import EXACT
from napari_plugin._viewport import ViewRequest

OWN = {"medinr_slicer": True}
LETTER_COLOR = "#ffd400"
UNITS2 = ("mm", "mm")


class SliceLayers:
    """Carries out the layer bookkeeping of one slicer on a viewer."""

    def __init__(self, viewer: Any, model: SlicerModel) -> None:
        self.viewer, self.model = viewer, model
        self.parked: list[Any] = []
        self._setting = False  # True while the slicer itself sets a window (not the user)
        self.to_select = False  # an image layer was added and not selected yet (see select_own)
        self._announced: dict[str, tuple] = {}  # canvas mm each own image spanned when napari's dims last saw it

    def layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def present(self) -> list[tuple[str, dict]]:
        return [(lyr.name, lyr.metadata) for lyr in self.viewer.layers]

    # -- checkpoint layers -----------------------------------------------------------------------------------
    def park(self) -> list[Any]:
        """Set every checkpoint volume layer aside; returns those set aside now."""
        names = book.to_park(self.present())
        new = [self.viewer.layers[n] for n in names]
        for lyr in new:
            self.viewer.layers.remove(lyr)
        self.parked += new
        return new

    def sources(self) -> list[Any]:
        """Checkpoint layers on offer: those set aside, then any still in the viewer."""
        live = [lyr for lyr in self.viewer.layers if book.is_source(lyr.metadata) and lyr not in self.parked]
        return self.parked + live

    def restore(self) -> None:
        """Give back the layers set aside, in their order, with their full lattice if it arrived meanwhile."""
        for lyr in self.parked:
            image = lyr.metadata.get(CHECKPOINT_KEY)
            if image is not None and _lattices.is_final(image):
                update_volume_layer(lyr, image, _lattices.current(image))
            if lyr not in self.viewer.layers:
                self.viewer.layers.append(lyr)
        self.parked = []

    # -- own layers ------------------------------------------------------------------------------------------
    def ensure(self, ndisplay: int) -> None:
        """Add and remove own layers so that the mode's are present (images empty until their first frame)."""
        model = self.model
        keys = [t.key for t in model.tiles()] if model.image is not None else []
        want = book.wanted(ndisplay, keys, model.controls.grid and ndisplay == 2, model.controls.linked)
        for name in book.own_to_remove(self.present(), want):
            self.viewer.layers.remove(name)
        if ndisplay == 3 or model.image is None:
            return
        for name in want.images:
            if self.layer(name) is None:
                self._add_image(name)
        if want.crosshair and self.layer(book.CROSSHAIR_LAYER) is None:
            self.viewer.add_shapes(
                name=book.CROSSHAIR_LAYER, units=UNITS2, metadata=dict(OWN), edge_color="#00c8ff", edge_width=0.6
            )
        if want.crosshair and self.layer(book.LABELS_LAYER) is None:
            self._add_labels()

    def prepare(self) -> None:
        """Add the single view's image layer (hidden) before any checkpoint is shown: a first opening calls this
        before its file is planned (:meth:`SliceWidget.opening`), so that napari's 50-80 ms of setting up a layer
        is a stretch of the main thread of its own, not added to the handover's work."""
        if self.viewer.dims.ndisplay == 2 and not self.model.controls.linked and self.layer(book.SLICE_LAYER) is None:
            self._add_image(book.SLICE_LAYER)

    def reveal(self) -> None:
        """Make the single view's hidden layer visible (still its black 2 x 2 placeholder): the first draw of a
        layer compiles its shaders (30-70 ms with a software OpenGL), a stretch of its own, not the first frame's."""
        layer = self.layer(book.SLICE_LAYER)  # the one layer prepare adds
        if layer is not None and layer.data.shape == (2, 2):
            layer.visible = True

    def select_own(self) -> None:
        """Select the single view's layer when nothing is selected (its napari controls: window, colour map).
        Not done when it is added: the controls' first layout and paint (40-60 ms) get a stretch of their own."""
        self.to_select = False
        layer = self.layer(book.SLICE_LAYER)
        if layer is not None and not self.viewer.layers.selection:
            self.viewer.layers.selection.active = layer

    def _add_image(self, name: str) -> Any:
        layers = self.viewer.layers
        activate = getattr(layers, "_activate_on_insert", None)
        if activate is not None:  # napari makes an added layer the active one: see select_own
            layers._activate_on_insert = False
        try:
            layer = self.viewer.add_image(
                np.zeros((2, 2), np.float32), name=name, units=UNITS2, metadata=dict(OWN), visible=False
            )
        finally:
            if activate is not None:
                layers._activate_on_insert = activate
        layer.events.contrast_limits.connect(lambda event, lyr=layer: self._user_window(lyr))
        self._apply_display(layer)
        self._announced.pop(name, None)  # a layer of that name removed earlier (3D, linked views) spanned another
        self.to_select = True
        return layer

    def remove_all(self) -> None:
        for name, meta in self.present():
            if book.is_own(name, meta):
                self.viewer.layers.remove(name)

    # -- frames ----------------------------------------------------------------------------------------------
    def show_frame(self, request: ViewRequest, frame: np.ndarray, tier: str) -> None:
        layer = self.layer(book.tile_layer(request.key))
        if layer is None:
            return
        image = self.model.image
        layer.metadata[AFFINE_KEY] = slice_geometry(image, request.plane, request.shape).affine
        layer.metadata["medinr_description"] = image.describe()
        affine = np.array(
            [[request.scale[0], 0, request.translate[0]], [0, request.scale[1], request.translate[1]], [0, 0, 1]]
        )
        moved = not np.allclose(layer.affine.affine_matrix, affine)
        # the layer list repaints for every event of a layer: a cached frame spares it (and its thumbnail)
        with self.viewer.layers.events.blocker() if tier != EXACT else nullcontext():
            if not moved and layer.data.shape == frame.shape and layer.data.dtype == frame.dtype:
                layer.data[...] = frame  # same pixels, new values: one refresh, no new extent
                layer.refresh(thumbnail=tier == EXACT, highlight=False, extent=False)
            else:
                reach = request.rect  # a frame has its request's pixels
                known = self._announced.get(layer.name)
                if not moved and known is not None and _within(reach, known):
                    # a tilt's frame shape, inside the extent napari's dims already span: they need not be
                    # recomputed for it (napari's update of the viewer's dims on new data: 5-6 ms)
                    with layer.events.data.blocker():
                        layer.data = frame
                else:
                    layer.data = frame
                    self._announced[layer.name] = reach
                if moved:
                    layer.affine = affine
        if not layer.visible:
            layer.visible = True

    def show_grid(self, request: ViewRequest, lines: list[np.ndarray]) -> None:
        """The deformed grid of a field over the single view (lines in its pixel coordinates)."""
        paths = [(np.asarray(request.translate) + p * np.asarray(request.scale), "path") for p in lines]
        layer = self.layer(book.GRID_LAYER)
        if layer is None:
            self.viewer.add_shapes(
                [p for p, _ in paths],
                shape_type="path",
                edge_color="yellow",
                edge_width=min(request.scale),
                name=book.GRID_LAYER,
                units=UNITS2,
                metadata=dict(OWN),
            )
        else:
            layer.data = paths

    def show_crosshair(self, lines: list[np.ndarray]) -> None:
        layer = self.layer(book.CROSSHAIR_LAYER)
        if layer is not None:
            layer.data = [(line, "line") for line in lines]

    def show_tile_labels(self) -> None:
        """Letters of the linked views again if the views turned (another convention)."""
        layer = self.layer(book.LABELS_LAYER)
        points, letters = self.model.tile_labels()
        if layer is not None and list(layer.features["letter"]) != letters:
            self.viewer.layers.remove(layer)
            self._add_labels()

    def _add_labels(self) -> None:
        """The orientation letters of the linked views (text of invisible points, fixed to each view's edges)."""
        points, letters = self.model.tile_labels()
        self.viewer.add_points(
            np.asarray(points, dtype=float).reshape(-1, 2),
            features={"letter": letters},
            text={"string": "{letter}", "color": LETTER_COLOR, "size": 11},
            size=1.0,
            face_color="transparent",
            border_color="transparent",
            name=book.LABELS_LAYER,
            units=UNITS2,
            metadata=dict(OWN),
        )

    # -- window ----------------------------------------------------------------------------------------------
    def apply_display(self) -> None:
        """Colour map, window and slider range of the model's window on every own image layer."""
        for name, meta in self.present():
            if book.is_own(name, meta) and name not in (book.GRID_LAYER, book.CROSSHAIR_LAYER, book.LABELS_LAYER):
                self._apply_display(self.viewer.layers[name])

    def _apply_display(self, layer: Any) -> None:
        window = self.model.window
        shown, limits = window.display, window.limits
        if shown is None or limits is None:
            return
        colormap = shown.colormap
        if layer.name == book.CONTEXT_LAYER and colormap == "gray":
            colormap = plane_colormap()  # the plane in 3D: the air around the head lets the volume show through
        self._setting = True
        try:
            if layer.colormap.name != getattr(colormap, "name", colormap):
                layer.colormap = colormap
            layer.contrast_limits_range = shown.slider_range(limits)
            layer.contrast_limits = limits
        finally:
            self._setting = False

    def _user_window(self, layer: Any) -> None:
        if not self._setting and self.model.window.display is not None:
            self.model.set_window(tuple(layer.contrast_limits))


def _within(inner: tuple[float, ...], outer: tuple[float, ...]) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def plane_colormap() -> Any:
    """Grey, with the darkest 3 % of the window transparent."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        [[0, 0, 0, 0], [0.03, 0.03, 0.03, 1], [1, 1, 1, 1]], controls=[0.0, 0.03, 1.0], name="medinr gray plane"
    )
