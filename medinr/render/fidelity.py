"""How faithful a rendered plane is: PSNR against the source volume at the same world points, inside the brain.

The source is interpolated trilinearly at the pixel centres (the way a viewer shows the scan itself); the brain
region is the tissue labels (grey or white matter) with their holes (ventricles) filled, taken by nearest
neighbour. Used by ``bench/render.py`` and the test of the shipped sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medinr.geometry import Geometry
from medinr.metrics import psnr
from medinr.render.planes import Plane


def on_plane(volume: np.ndarray, geometry: Geometry, plane: Plane, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """``volume`` sampled at the pixel centres of ``plane`` (``order`` 1: trilinear, 0: nearest); 0 outside."""
    ijk = geometry.world_to_voxel(plane.world_points(shape))
    return ndimage.map_coordinates(volume, np.moveaxis(ijk, -1, 0), order=order, mode="constant", cval=0.0)


def brain_region(labels: np.ndarray) -> np.ndarray:
    """Tissue (labels > 0) with enclosed holes filled: the brain including its ventricles."""
    return ndimage.binary_fill_holes(labels > 0)


def plane_psnr(
    rendered: np.ndarray,
    source: tuple[np.ndarray, Geometry],
    brain: tuple[np.ndarray, Geometry],
    plane: Plane,
) -> float:
    """PSNR (dB, data range = the source's maximum on the plane) of ``rendered`` inside the brain on ``plane``.

    Parameters
    ----------
    rendered : ndarray
        ``(H, W)`` values of the plane in the source's units.
    source, brain : (array, Geometry)
        The source volume and a brain mask (see :func:`brain_region`), each with its grid.
    """
    shape = rendered.shape
    truth = on_plane(source[0], source[1], plane, shape, order=1)
    mask = on_plane(brain[0].astype(np.float32), brain[1], plane, shape, order=0) > 0.5
    return psnr(truth, rendered, mask)
