"""Orientation labels without Qt: which side of the patient each screen edge of a plane looks towards.

World coordinates are RAS+ mm (CONVENTIONS.md): +x is the patient's right, +y anterior, +z superior. A screen
edge is labelled with the letters of the world directions its outward direction is closest to, the strongest
first ("R", or "RA" for a plane tilted by more than about 22 degrees), as 3D Slicer and ITK-SNAP do.
"""

from __future__ import annotations

import numpy as np

from medinr.render import Plane

#: Letters of the positive and negative world axes (RAS+).
AXIS_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))
#: A direction contributes its letter when its component exceeds sin(22.5 deg).
LETTER_THRESHOLD = 0.383
SIDES = ("top", "bottom", "left", "right")


def direction_label(direction: np.ndarray) -> str:
    """Letters of a world direction, strongest component first ('R', 'AS', ...)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    order = np.argsort(-np.abs(d), kind="stable")
    letters = [AXIS_LETTERS[i][0 if d[i] > 0 else 1] for i in order if abs(d[i]) >= LETTER_THRESHOLD]
    return "".join(letters) or AXIS_LETTERS[order[0]][0 if d[order[0]] > 0 else 1]


def edge_labels(plane: Plane) -> dict[str, str] | None:
    """Labels of the four screen edges of ``plane`` (rows go down the screen); None for a 2D image's plane,
    whose world has no anatomical axes."""
    if plane.ndim != 3:
        return None
    row, col = plane.row_axis, plane.col_axis
    return {
        "top": direction_label(-row),
        "bottom": direction_label(row),
        "left": direction_label(-col),
        "right": direction_label(col),
    }
