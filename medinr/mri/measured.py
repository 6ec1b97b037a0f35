"""What a Cartesian k-space reader returns (:class:`MeasuredKspace`): the samples on their grid, the mask, the
geometry and a noise scan when the file has one.

Its own module so that every reader (:mod:`medinr.mri.kspace_io` for ``.npy`` and fastMRI, :mod:`medinr.mri.mrd_io`
for ISMRMRD) can return it without importing the others; non-Cartesian readers return
:class:`medinr.mri.noncart_kspace.NonCartesianKspace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medinr.geometry import Geometry


@dataclass
class MeasuredKspace:
    """Measured k-space with its mask (None: not stored in the file) and the image grid's geometry.

    ``noise`` holds the samples ``(C, n)`` of a noise-adjustment scan when the file has one (ISMRMRD), with the
    ratio of its dwell time to the data's (see :func:`medinr.mri.noise.noise_from_scan`).
    """

    kspace: np.ndarray  # (C, *grid) complex64
    mask: np.ndarray | None  # grid, bool
    geometry: Geometry
    source: str
    noise: np.ndarray | None = None
    noise_dwell_ratio: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)
