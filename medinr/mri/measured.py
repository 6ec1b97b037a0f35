"""What a Cartesian k-space reader returns (:class:`MeasuredKspace`): the samples on their grid, the mask, the
geometry and a noise scan when the file has one.

Its own module so that every reader (:mod:`medinr.mri.kspace_io` for ``.npy`` and fastMRI, :mod:`medinr.mri.mrd_io`
for ISMRMRD) can return it without importing the others; non-Cartesian readers return
:class:`medinr.mri.noncart_kspace.NonCartesianKspace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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

    def acquired(self) -> np.ndarray:
        """The acquired samples (grid, bool): the stored mask, else those not zero in every coil."""
        return self.mask if self.mask is not None else infer_mask(self.kspace)


def infer_mask(kspace: np.ndarray) -> np.ndarray:
    """Acquired samples = those not exactly zero in some coil (zero-filled storage of undersampled data)."""
    return np.any(kspace != 0, axis=0)


#: The smallest extent, per axis and as a fraction of the grid, of an acquired block that counts as a full
#: acquisition with zero-padded edges (:func:`acquired_box`). Partial Fourier acquires at least 5/8 of the lines
#: (a scanner's smallest factor), a fastMRI knee scan about 90 % of its phase encodes; a block under half the grid
#: is a low-resolution or calibration-only acquisition, taken as undersampled.
FULL_EXTENT = 0.5


def acquired_box(stored: np.ndarray) -> tuple[slice, ...] | None:
    """The box of k-space that the acquired samples ``stored`` fill completely, if they do; else None.

    A fully sampled scan is often stored on a larger grid than it acquired: zero-padded phase encodes at the
    edges (fastMRI's knee files: the columns outside the ISMRMRD header's encoding limits, its loader's
    ``padding_left`` / ``padding_right``), partial Fourier, a partial echo. Such data are fully sampled within
    the box, and undersampling them retrospectively (``--accel``) must stay possible. A box is each axis's
    acquired positions as one contiguous run of at least :data:`FULL_EXTENT` of that axis, with every sample of
    their product acquired.
    """
    stored = np.asarray(stored, bool)
    box = []
    for axis, n in enumerate(stored.shape):
        acquired = np.flatnonzero(stored.any(axis=tuple(a for a in range(stored.ndim) if a != axis)))
        if acquired.size == 0 or acquired[-1] - acquired[0] + 1 != acquired.size or acquired.size < FULL_EXTENT * n:
            return None
        box.append(slice(int(acquired[0]), int(acquired[-1]) + 1))
    return tuple(box) if bool(stored[tuple(box)].all()) else None


def to_recon_field_of_view(measured: MeasuredKspace, encoded_fov_mm: float, recon_fov_mm: float) -> MeasuredKspace:
    """``measured`` without the readout oversampling that a header declares: an encoded field of view along the
    readout (``encoded_fov_mm``, over the grid's axis 0) larger than the reconstructed one (``recon_fov_mm``) by
    more than 0.5 % (:func:`remove_readout_oversampling`); otherwise ``measured`` itself."""
    n = measured.kspace.shape[1]
    if not (recon_fov_mm > 0 and encoded_fov_mm > 0) or recon_fov_mm >= encoded_fov_mm * 0.995:
        return measured
    keep = int(round(n * recon_fov_mm / encoded_fov_mm))
    return remove_readout_oversampling(measured, keep) if 1 <= keep < n else measured


def remove_readout_oversampling(measured: MeasuredKspace, keep: int) -> MeasuredKspace:
    """The same k-space on the central ``keep`` pixels of the readout's field of view (axis 0 of the grid).

    Scanners sample the readout finer than the field of view needs (twice by default) so that nothing outside
    it folds in along x; their own reconstruction, Gadgetron (RemoveROOversamplingGadget) and fastMRI's
    reference images then keep the central half. Without it the image is twice as large as the prescribed one,
    half of it air, and every step costs twice as much. The removal is exact for a full readout: inverse FFT
    along the readout, the central ``keep`` pixels (the centred FFT's centre ``N // 2`` stays the centre
    ``keep // 2``), FFT back; orthonormal transforms keep white noise white with the same variance, so a noise
    scan still describes the data.

    A partly acquired readout (partial echo, stored as zeros) keeps a sample only where every original sample
    within one new sample spacing of it was acquired; the others become unacquired (zero). The voxel size and
    the world position of every kept voxel are unchanged.
    """
    kspace = measured.kspace
    n = kspace.shape[1]
    if not 1 <= keep < n:
        raise ValueError(f"keep must lie in [1, {n}), got {keep}")
    stored = measured.acquired()
    import torch

    from medinr.mri.fft import fftc, ifftc

    start = n // 2 - keep // 2
    cropped = np.empty((kspace.shape[0], keep, *kspace.shape[2:]), np.complex64)
    for c, coil in enumerate(kspace):  # one coil at a time: a 3D scan's copies stay one coil large
        readouts = torch.from_numpy(np.ascontiguousarray(np.moveaxis(coil, 0, -1)))  # the readout last, for fftc
        image = ifftc(readouts, 1)[..., start : start + keep]
        cropped[c] = np.moveaxis(fftc(image, 1).numpy(), -1, 0)
    # new readout sample j sits at original (continuous) index n // 2 + (j - keep // 2) * n / keep; it is kept
    # where the original samples within one new spacing of it were acquired (indices past the grid's ends count
    # as the end sample: a full readout keeps every sample)
    centre = n // 2 + (np.arange(keep) - keep // 2) * (n / keep)
    reach = int(np.ceil(n / keep))
    mask = np.ones((keep, *stored.shape[1:]), bool)
    for offset in range(-reach, reach + 1):
        mask &= stored[np.clip(np.rint(centre + offset * n / keep / reach).astype(int), 0, n - 1)]
    cropped *= mask
    affine = measured.geometry.affine.copy()
    affine[:3, 3] += affine[:3, 0] * start
    grid = (keep, *measured.geometry.shape[1:])
    meta = {**measured.meta, "readout_oversampling_removed": {"encoded_samples": int(n), "kept_samples": int(keep)}}
    return replace(measured, kspace=cropped, mask=mask, geometry=Geometry(grid, affine), meta=meta)
