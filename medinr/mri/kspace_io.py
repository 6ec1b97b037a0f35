"""Reading measured k-space: ``.npy`` complex ``[coils, ky, kx]`` (or ``[coils, kz, ky, kx]``), fastMRI ``.h5``,
ISMRMRD / MRD ``.h5`` (:mod:`medinr.mri.mrd_io`: Cartesian or non-Cartesian) and non-Cartesian ``.npz``
(:mod:`medinr.mri.noncart_kspace`). :func:`load_kspace` dispatches on the content: Cartesian data come back as
:class:`MeasuredKspace`, non-Cartesian data as :class:`~medinr.mri.noncart_kspace.NonCartesianKspace`.

The axis convention is medinr's (see CONVENTIONS): the first spatial axis is the readout, the last one the
(undersampled) phase encode. A mask comes from the file (fastMRI ``mask``), a mask file, or the samples that
are exactly zero in every coil.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.mri.masks import validate_mask


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


def _is_noncartesian_npz(p: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            names = {n.removesuffix(".npy") for n in z.namelist()}
    except (zipfile.BadZipFile, OSError):
        return False
    return {"kspace", "traj"} <= names


def is_kspace_file(path: str | os.PathLike) -> bool:
    """True for ``.h5`` files (fastMRI or ISMRMRD), complex ``.npy`` arrays of 3 or 4 dimensions (coil axis first)
    and ``.npz`` files holding ``kspace`` and ``traj`` (non-Cartesian)."""
    p = Path(path)
    if p.suffix.lower() in (".h5", ".hdf5", ".mrd"):
        return True
    if p.suffix.lower() == ".npz" and p.is_file():
        return _is_noncartesian_npz(p)
    if p.suffix.lower() == ".npy" and p.is_file():
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception:
            return False
        return np.iscomplexobj(arr) and arr.ndim in (3, 4)
    return False


def _geometry(path: Path, grid: tuple[int, ...]) -> Geometry:
    """1 mm voxels unless a sidecar ``<name>.json`` gives ``spacing_mm``."""
    sidecar = path.with_suffix(".json")
    spacing = [1.0] * len(grid)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            spacing = [float(s) for s in meta.get("spacing_mm", spacing)][: len(grid)]
        except (ValueError, TypeError) as exc:
            raise MedinrError(f"{sidecar} is not a valid sidecar (needs 'spacing_mm': [..]): {exc}") from None
    affine = np.eye(4)
    for a, s in enumerate(spacing):
        affine[a, a] = s
    return Geometry(grid, affine)


def load_kspace(path: str | os.PathLike, slice_index: int | None = None, matrix: tuple[int, ...] | None = None,
                fov_mm: tuple[float, ...] | None = None):
    """Load measured k-space.

    Parameters
    ----------
    path : path-like
        ``.npy`` complex ``(C, *grid)``; or ``.h5`` with a ``kspace`` dataset: ``(slices, coils, ky, kx)``
        (fastMRI multi-coil), ``(coils, ky, kx)``, or ``(slices, ky, kx)`` single coil when ``slice_index`` is
        given; an optional ``mask`` dataset (1D over the last axis, or the full grid); or an ISMRMRD ``.h5``
        (:func:`medinr.mri.mrd_io.read_mrd`); or a non-Cartesian ``.npz``
        (:func:`medinr.mri.noncart_kspace.load_npz`).
    slice_index : int, optional
        Slice of a multi-slice ``.h5`` (default: the middle one).
    matrix, fov_mm : tuples, optional
        Image matrix and field of view (mm) of a non-Cartesian ``.npz`` (``--matrix``, ``--fov``).

    Returns
    -------
    MeasuredKspace (Cartesian) or NonCartesianKspace

    Raises
    ------
    MedinrError
        For a missing or unreadable file, a real-valued array, wrong dimensions or non-finite values.
    """
    p = Path(path)
    if not p.is_file():
        raise MedinrError(f"file not found: {p}")
    if p.suffix.lower() == ".npz":
        from medinr.mri.noncart_kspace import load_npz

        return load_npz(p, matrix, fov_mm)
    if p.suffix.lower() in (".h5", ".hdf5", ".mrd"):
        from medinr.mri.mrd_io import is_mrd_file, read_mrd

        if is_mrd_file(p):
            return read_mrd(p, slice_index)
    mask = None
    if p.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(p, "r") as f:
                if "kspace" not in f:
                    raise MedinrError(f"{p} has no 'kspace' dataset (fastMRI layout expected)")
                ds = f["kspace"]
                if ds.ndim == 4 or (ds.ndim == 3 and slice_index is not None):
                    index = ds.shape[0] // 2 if slice_index is None else slice_index
                    if not -ds.shape[0] <= index < ds.shape[0]:
                        raise MedinrError(f"slice {index} is outside the {ds.shape[0]} slices of {p}")
                    kspace = np.asarray(ds[index])
                else:
                    kspace = np.asarray(ds[()])
                if "mask" in f:
                    mask = np.asarray(f["mask"][()])
        except MedinrError:
            raise
        except Exception as exc:
            raise MedinrError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None
        if kspace.ndim == 2:
            kspace = kspace[None]
    else:
        try:
            kspace = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise MedinrError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None
    if not np.iscomplexobj(kspace):
        raise MedinrError(f"{p} holds real values: measured k-space must be complex [coils, ky, kx]")
    if kspace.ndim not in (3, 4):
        raise MedinrError(f"{p} has shape {kspace.shape}: expected k-space [coils, ky, kx] or [coils, kz, ky, kx]")
    kspace = kspace.astype(np.complex64)
    if not np.all(np.isfinite(kspace)):
        raise MedinrError(f"{p} contains NaN or infinite k-space values")
    grid = tuple(kspace.shape[1:])
    if mask is not None:
        mask = validate_mask(mask, grid, f"the mask in {p}")
    return MeasuredKspace(kspace, mask, _geometry(p, grid), str(p))


def infer_mask(kspace: np.ndarray) -> np.ndarray:
    """Acquired samples = those not exactly zero in some coil (zero-filled storage of undersampled data)."""
    return np.any(kspace != 0, axis=0)
