"""Viewport maths without Qt: where each view sits on the canvas, which part the camera shows, at what pixels.

The 2D canvas lives in *canvas millimetres* ``(row_mm, col_mm)``. A view (:class:`Tile`) is a whole plane placed
with its top-left corner at ``origin``; a single view sits at ``(0, 0)``, the linked axial / coronal / sagittal
views side by side. napari's camera centre and zoom (screen pixels per mm) map directly to canvas mm, so a render
asks for the visible part of each tile at screen resolution, on a pixel grid anchored at the tile's corner (a
pan moves whole pixels and the image does not shimmer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medinr.render import Plane

#: Key of the single view.
MAIN = "main"
#: The linked views, left to right.
LINKED = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class Tile:
    """A whole plane placed on the canvas: ``origin`` is where its top-left corner sits, canvas mm."""

    key: str
    plane: Plane
    origin: tuple[float, float] = (0.0, 0.0)

    @property
    def rect(self) -> tuple[float, float, float, float]:
        """``(row0, col0, row1, col1)`` in canvas mm."""
        r0, c0 = self.origin
        return r0, c0, r0 + self.plane.fov_mm[0], c0 + self.plane.fov_mm[1]

    def contains(self, rc: Sequence[float]) -> bool:
        r0, c0, r1, c1 = self.rect
        return r0 <= rc[0] <= r1 and c0 <= rc[1] <= c1

    def world(self, rc: Sequence[float]) -> np.ndarray:
        """World mm of the canvas point ``rc``."""
        p = self.plane
        corner = p.centre - p.fov_mm[0] / 2 * p.row_axis - p.fov_mm[1] / 2 * p.col_axis
        return corner + (rc[0] - self.origin[0]) * p.row_axis + (rc[1] - self.origin[1]) * p.col_axis

    def canvas(self, world: Sequence[float]) -> tuple[float, float]:
        """Canvas mm of the projection of a world point onto the tile's plane."""
        p = self.plane
        corner = p.centre - p.fov_mm[0] / 2 * p.row_axis - p.fov_mm[1] / 2 * p.col_axis
        d = np.asarray(world, dtype=np.float64) - corner
        return self.origin[0] + float(d @ p.row_axis), self.origin[1] + float(d @ p.col_axis)


@dataclass(frozen=True)
class ViewRequest:
    """One render: the plane region, its pixel grid, and where the layer sits (canvas mm of pixel (0, 0))."""

    plane: Plane
    shape: tuple[int, int]
    scale: tuple[float, float]
    translate: tuple[float, float]
    key: str = MAIN

    @property
    def rect(self) -> tuple[float, float, float, float]:
        """``(row0, col0, row1, col1)`` canvas mm that the frame's pixels cover (their outer edges)."""
        (sr, sc), (tr, tc) = self.scale, self.translate
        return tr - sr / 2, tc - sc / 2, tr + (self.shape[0] - 0.5) * sr, tc + (self.shape[1] - 0.5) * sc

    def pixel_of(self, rc: Sequence[float]) -> tuple[int, int]:
        """Index of the pixel under canvas point ``rc`` (may lie outside the grid)."""
        return (
            int(math.floor((rc[0] - self.translate[0]) / self.scale[0] + 0.5)),
            int(math.floor((rc[1] - self.translate[1]) / self.scale[1] + 0.5)),
        )

    def world(self, rc: Sequence[float]) -> np.ndarray:
        """World mm of canvas point ``rc`` on the rendered plane."""
        p = self.plane
        first = p.pixel_matrix(self.shape)[: p.ndim, 2]  # world of pixel (0, 0)
        dr, dc = (rc[0] - self.translate[0]) / self.scale[0], (rc[1] - self.translate[1]) / self.scale[1]
        step = p.spacing(self.shape)
        return first + dr * step[0] * p.row_axis + dc * step[1] * p.col_axis


def pixel_step(zoom: float, canvas_hw: Sequence[int], max_side: int = 1024) -> float:
    """Rendered pixel size, mm: one screen pixel (zoom is screen px per mm), coarser on a huge canvas."""
    return max(1.0, max(canvas_hw) / max_side) / max(float(zoom), 1e-9)


def visible_request(
    tile: Tile, center_rc: Sequence[float], zoom: float, canvas_hw: Sequence[int], max_side: int = 1024
) -> ViewRequest | None:
    """The part of ``tile`` the camera shows, at screen resolution; None when none of it is on screen.

    Parameters
    ----------
    center_rc : sequence of float
        Camera centre, canvas mm (the last two displayed dims).
    zoom : float
        napari camera zoom: screen pixels per mm.
    canvas_hw : sequence of int
        Canvas size in screen pixels (h, w).
    max_side : int
        Longest side rendered at one pixel per screen pixel; a larger canvas is rendered with coarser pixels.
    """
    h, w = max(1, int(canvas_hw[0])), max(1, int(canvas_hw[1]))
    step = pixel_step(zoom, (h, w), max_side)
    half = (h / (2 * zoom), w / (2 * zoom))
    r0, c0, r1, c1 = tile.rect
    span = []  # first and last+1 pixel of the tile's grid on screen, per axis
    for lo, hi, centre, hw in ((r0, r1, center_rc[0], half[0]), (c0, c1, center_rc[1], half[1])):
        first = math.floor((max(lo, centre - hw) - lo) / step)
        span.append((first, math.ceil((min(hi, centre + hw) - lo) / step - 1e-9)))
    (i0, i1), (j0, j1) = span
    if i1 <= i0 or j1 <= j0:
        return None
    shape = (i1 - i0, j1 - j0)
    plane = tile.plane.region(((i0 + i1) / 2 * step, (j0 + j1) / 2 * step), (shape[0] * step, shape[1] * step))
    translate = (r0 + (i0 + 0.5) * step, c0 + (j0 + 0.5) * step)
    return ViewRequest(plane, shape, (step, step), translate, tile.key)


def extent(tiles: Sequence[Tile]) -> tuple[float, float, float, float]:
    """``(row0, col0, row1, col1)`` around every tile, canvas mm."""
    rects = np.array([t.rect for t in tiles])
    return float(rects[:, 0].min()), float(rects[:, 1].min()), float(rects[:, 2].max()), float(rects[:, 3].max())


def fit_zoom(tiles: Sequence[Tile], canvas_hw: Sequence[int], margin: float = 0.95) -> float:
    """Camera zoom (screen px per mm) that shows every tile."""
    r0, c0, r1, c1 = extent(tiles)
    return margin * min(canvas_hw[0] / (r1 - r0), canvas_hw[1] / (c1 - c0))


def side_by_side(planes: Sequence[tuple[str, Plane]], gap_fraction: float = 0.04) -> list[Tile]:
    """Tiles of ``planes`` left to right, top-aligned, a small gap apart."""
    gap = gap_fraction * max(max(p.fov_mm) for _, p in planes)
    tiles, col = [], 0.0
    for key, plane in planes:
        tiles.append(Tile(key, plane, (0.0, col)))
        col += plane.fov_mm[1] + gap
    return tiles


def crosshair_lines(tiles: Sequence[Tile], point: Sequence[float]) -> list[np.ndarray]:
    """Two lines per tile through the projection of world ``point``: ``(2, 2)`` arrays of canvas mm."""
    lines = []
    for tile in tiles:
        r, c = tile.canvas(point)
        r0, c0, r1, c1 = tile.rect
        lines.append(np.array([[r, c0], [r, c1]]))
        lines.append(np.array([[r0, c], [r1, c]]))
    return lines


def label_points(tiles: Sequence[Tile], labels: Sequence[dict[str, str]], inset: float = 0.04) -> tuple[list, list]:
    """Where each tile's orientation letters go (canvas mm, just inside its edges) and the letters."""
    points, texts = [], []
    for tile, letters in zip(tiles, labels):
        r0, c0, r1, c1 = tile.rect
        dr, dc = inset * (r1 - r0), inset * (c1 - c0)
        middle = ((r0 + r1) / 2, (c0 + c1) / 2)
        spots = {"top": (r0 + dr, middle[1]), "bottom": (r1 - dr, middle[1]), "left": (middle[0], c0 + dc),
                 "right": (middle[0], c1 - dc)}
        for side, spot in spots.items():
            points.append(spot)
            texts.append(letters[side])
    return points, texts
