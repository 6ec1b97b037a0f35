"""Registration visuals: a displacement field's deformed grid on a plane (its Jacobian is a component of
:func:`medinr.render.products.render_plane`, computed by :mod:`medinr.registration.jacobian`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.render.planes import Plane, shape2


def deformed_grid(
    image: ContinuousImage, plane: Plane, shape: Sequence[int], spacing_mm: float = 8.0, samples: int = 4
) -> list[np.ndarray]:
    """Grid lines of the plane moved by a displacement checkpoint, as paths in pixel coordinates.

    Each line of constant row (or column), every ``spacing_mm`` mm, is sampled ``samples`` times per cell;
    its points ``x`` move to ``x + u(x)`` (fixed -> moving, CONVENTIONS.md) and are projected back onto the
    plane. Returns a list of ``(n, 2)`` arrays of ``(row, col)`` pixel positions.
    """
    ckpt = ContinuousImage.of(image)
    if ckpt.kind != "displacement":
        raise MedinrError("a deformed grid needs a displacement (registration) checkpoint")
    h, w = shape2(shape)
    dr, dc = plane.spacing((h, w))
    m = plane.pixel_matrix((h, w))
    rows = np.arange(0, h, max(1.0, spacing_mm / dr))
    cols = np.arange(0, w, max(1.0, spacing_mm / dc))
    fine_r = np.linspace(0, h - 1, max(2, int(len(rows) * samples)))
    fine_c = np.linspace(0, w - 1, max(2, int(len(cols) * samples)))
    lines = [np.stack([np.full_like(fine_c, r), fine_c], -1) for r in rows]
    lines += [np.stack([fine_r, np.full_like(fine_r, c)], -1) for c in cols]
    nd = plane.ndim
    lin = np.stack([m[:nd, 0], m[:nd, 1]], axis=1)  # (nd, 2): pixel step -> world
    pinv = np.linalg.pinv(lin)
    rc = np.concatenate(lines)  # one evaluation for every line
    u = ckpt.sample(rc @ lin.T + m[:nd, 2], outside=None)[..., :nd]
    moved = (u @ pinv.T + rc).astype(np.float32)
    return np.split(moved, np.cumsum([len(line) for line in lines])[:-1])
