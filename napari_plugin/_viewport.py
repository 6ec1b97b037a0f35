"""Qt-free viewport maths of the slicer: which part of the plane the 2D camera shows, at what pixel size.

The slice layer lives in plane millimetres: world ``(row_mm, col_mm)`` measured from the top-left corner of
the base plane, so napari's camera centre and zoom (screen pixels per mm) translate directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from medinr.render import Plane


@dataclass(frozen=True)
class ViewRequest:
    """One render: the plane region, its pixel grid and where the layer must sit in plane mm."""

    plane: Plane
    shape: tuple[int, int]
    scale: tuple[float, float]
    translate: tuple[float, float]


def visible_request(
    base: Plane,
    center_rc_mm: tuple[float, float],
    zoom: float,
    canvas_hw: tuple[int, int],
    max_side: int = 1024,
    quality: float = 1.0,
) -> ViewRequest:
    """The visible part of ``base`` at screen resolution.

    Parameters
    ----------
    base : Plane
        The whole slice (its top-left corner is the origin of plane mm).
    center_rc_mm : tuple
        Camera centre in plane mm (the last two displayed dims).
    zoom : float
        napari camera zoom: screen pixels per mm.
    canvas_hw : tuple
        Canvas size in screen pixels (h, w).
    max_side : int
        Cap on pixels per side (a huge canvas is rendered at a coarser pixel size instead).
    quality : float
        Rendered pixels per screen pixel (below 1 trades detail for speed).
    """
    h_px, w_px = max(1, int(canvas_hw[0])), max(1, int(canvas_hw[1]))
    zoom = max(float(zoom), 1e-9)
    size_mm = (h_px / zoom, w_px / zoom)
    scale_px = min(1.0, max_side / max(h_px, w_px)) * quality
    shape = (max(1, int(round(h_px * scale_px))), max(1, int(round(w_px * scale_px))))
    step = (size_mm[0] / shape[0], size_mm[1] / shape[1])
    plane = base.region(center_rc_mm, size_mm)
    translate = (
        float(center_rc_mm[0] - size_mm[0] / 2 + step[0] / 2),
        float(center_rc_mm[1] - size_mm[1] / 2 + step[1] / 2),
    )
    return ViewRequest(plane, shape, step, translate)


def fit_zoom(base: Plane, canvas_hw: tuple[int, int], margin: float = 0.95) -> float:
    """Camera zoom (screen px per mm) that shows the whole base plane."""
    return margin * min(canvas_hw[0] / base.fov_mm[0], canvas_hw[1] / base.fov_mm[1])
