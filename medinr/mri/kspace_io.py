"""Reading measured k-space: ``.npy`` complex ``[coils, ky, kx]`` (or ``[coils, kz, ky, kx]``), fastMRI ``.h5``,
ISMRMRD / MRD ``.h5`` (:mod:`medinr.mri.mrd_io`: Cartesian or non-Cartesian) and non-Cartesian ``.npz``
(:mod:`medinr.mri.noncart_kspace`). :func:`load_kspace` dispatches on the content: Cartesian data come back as
:class:`MeasuredKspace`, non-Cartesian data as :class:`~medinr.mri.noncart_kspace.NonCartesianKspace`.

The axis convention is medinr's (see CONVENTIONS): the first spatial axis is the readout, the last one the
(undersampled) phase encode. A mask comes from the file (fastMRI ``mask``), a mask file, or the samples that
are exactly zero in every coil. Headers are checked before any sample is read (:mod:`medinr.filecheck`).

The sidecar ``<name>.json`` is read with :func:`medinr.filecheck.load_small_json` (size and depth limits, then the
one strict JSON reader, :mod:`medinr.jsonsafe`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medinr.errors import MedinrError
from medinr.filecheck import (
    check_declared_size,
    check_file_holds,
    check_geometry,
    check_hdf5_dataset,
    check_hdf5_links,
    check_numeric_dtype,
    check_values,
    load_small_json,
)
from medinr.geometry import Geometry
from medinr.mri.masks import validate_mask
from medinr.mri.measured import MeasuredKspace, to_recon_field_of_view
from medinr.mri.noncart_kspace import diagonal_geometry
from medinr.resources import array_bytes, check_budget
from medinr.textsafe import terminal_safe


def _is_noncartesian_npz(p: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            names = {n.removesuffix(".npy") for n in z.namelist()}
    except (zipfile.BadZipFile, OSError):
        return False
    # medinr reads no image from an .npz: one without both arrays is k-space that load_npz refuses by name
    return bool(names & {"kspace", "traj"})


def is_kspace_file(path: str | os.PathLike) -> bool:
    """True for ``.h5`` files (fastMRI or ISMRMRD), complex ``.npy`` arrays of 3 or 4 dimensions (coil axis first)
    and ``.npz`` files holding ``kspace`` or ``traj`` (non-Cartesian; both are required when read)."""
    p = Path(path)
    if p.suffix.lower() in (".h5", ".hdf5", ".mrd"):
        return True
    if p.suffix.lower() == ".npz" and p.is_file():
        return _is_noncartesian_npz(p)
    if p.suffix.lower() == ".npy" and p.is_file():
        header = _npy_header(p)
        return header is not None and header[1].kind == "c" and len(header[0]) in (3, 4)
    return False


def _npy_header(p: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """Shape, type and data offset of a ``.npy`` file from its header (None: not a readable .npy)."""
    fmt = np.lib.format
    try:
        with open(p, "rb") as f:
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
            shape, _, dtype = read(f, max_header_size=1 << 16)
            return tuple(int(n) for n in shape), dtype, f.tell()
    except (OSError, ValueError, KeyError, SyntaxError):
        return None


def _geometry(path: Path, grid: tuple[int, ...]) -> Geometry:
    """1 mm voxels unless a sidecar ``<name>.json`` gives ``spacing_mm`` (one positive number per grid axis)."""
    sidecar = path.with_suffix(".json")
    affine = np.eye(4)
    if os.path.lexists(sidecar):
        meta = load_small_json(sidecar)
        if not isinstance(meta, dict):
            raise MedinrError(f"{sidecar} is not a valid sidecar: expected a JSON object like "
                              '{"spacing_mm": [1.0, 1.0]}')
        spacing = meta.get("spacing_mm", [1.0] * len(grid))
        if (not isinstance(spacing, list) or len(spacing) < len(grid)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spacing)):
            raise MedinrError(f"{sidecar}: 'spacing_mm' must be a list of {len(grid)} numbers (mm per axis), got "
                              f"{terminal_safe(json.dumps(spacing)[:60])}")
        for a, s in enumerate(spacing[: len(grid)]):
            affine[a, a] = _as_float(s)
    check_geometry(sidecar if os.path.lexists(sidecar) else path, affine, len(grid))
    return Geometry(grid, affine)


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer of 400 digits
        return float("inf")


def load_kspace(path: str | os.PathLike, slice_index: int | None = None, matrix: tuple[int, ...] | None = None,
                fov_mm: tuple[float, ...] | None = None, keep_oversampling: bool = False):
    """Load measured k-space.

    Parameters
    ----------
    path : path-like
        ``.npy`` complex ``(C, *grid)``; or ``.h5`` with a ``kspace`` dataset: ``(slices, coils, ky, kx)``
        (fastMRI multi-coil), ``(coils, ky, kx)``, or ``(slices, ky, kx)`` single coil when ``slice_index`` is
        given or the file is fastMRI's single-coil layout (a ``reconstruction_esc`` dataset, or an
        ``ismrmrd_header`` whose coil count is not the first axis's length); an optional ``mask`` dataset (1D
        over the last axis, or the full grid); or an ISMRMRD ``.h5``
        (:func:`medinr.mri.mrd_io.read_mrd`); or a non-Cartesian ``.npz``
        (:func:`medinr.mri.noncart_kspace.load_npz`).
    slice_index : int, optional
        Slice of a multi-slice ``.h5`` (default: the middle one).
    matrix, fov_mm : tuples, optional
        Image matrix and field of view (mm) of a non-Cartesian ``.npz`` (``--matrix``, ``--fov``).
    keep_oversampling : bool
        Keep the readout oversampling that an ISMRMRD header declares (an encoded field of view along x larger
        than the reconstructed one: ISMRMRD files and fastMRI's ``ismrmrd_header``). By default it is removed
        (:func:`medinr.mri.measured.remove_readout_oversampling`), as the scanner's own reconstruction does.

    Returns
    -------
    MeasuredKspace (Cartesian) or NonCartesianKspace

    Raises
    ------
    MedinrError
        For a missing or unreadable file, a real-valued array, wrong dimensions, non-finite values or values
        beyond complex64; from the header, before any sample is read: a declared size beyond the file (a
        compressed or never-written HDF5 dataset included) or the memory budget, data in other files (HDF5
        external links, virtual datasets, external storage), a mask that is not numeric.
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
            return read_mrd(p, slice_index, keep_oversampling)
    header = None
    with np.errstate(all="ignore"):
        if p.suffix.lower() in (".h5", ".hdf5"):
            kspace, mask, header = _read_h5(p, slice_index)
        else:
            kspace, mask = _read_npy_kspace(p), None
        check_values(p, kspace, what="k-space values")
        kspace = kspace.astype(np.complex64)
    grid = tuple(kspace.shape[1:])
    if mask is not None:
        mask = validate_mask(mask, grid, f"the mask in {p}")
    if header is None or len(grid) != 2 or grid != header["matrix"][:2]:
        return MeasuredKspace(kspace, mask, _geometry(p, grid), str(p))
    # fastMRI with its ISMRMRD header: the encoded field of view gives the voxels (a sidecar still overrides it)
    geometry = (_geometry(p, grid) if os.path.lexists(p.with_suffix(".json"))
                else diagonal_geometry(grid, header["fov_mm"][:2], f"the ismrmrd_header of {p}"))
    measured = MeasuredKspace(kspace, mask, geometry, str(p), meta={"format": "fastMRI"})
    return measured if keep_oversampling else to_recon_field_of_view(measured, header["fov_mm"][0],
                                                                      header["recon_fov_mm"][0])


def _check_kspace_header(p: Path, shape: tuple[int, ...], dtype: np.dtype, what: str = "") -> None:
    if dtype.kind != "c":
        check_numeric_dtype(p, dtype, "samples")
        raise MedinrError(f"{p}{what} holds real values: measured k-space must be complex [coils, ky, kx]")
    if len(shape) not in (3, 4):
        raise MedinrError(f"{p}{what} has shape {shape}: expected k-space [coils, ky, kx] or [coils, kz, ky, kx]")


def _read_npy_kspace(p: Path) -> np.ndarray:
    header = _npy_header(p)
    if header is None:
        raise MedinrError(f"cannot read {p}: not a NumPy .npy file")
    shape, dtype, offset = header
    if dtype.hasobject:
        raise MedinrError(f"{p} holds Python objects (a pickle), which medinr never loads")
    _check_kspace_header(p, shape, dtype)
    check_declared_size(p, shape, dtype.itemsize, p.stat().st_size - offset, compressed=False,
                        working_bytes_per_voxel=_WORKING_BYTES)
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise MedinrError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None


#: Bytes per complex sample a reconstruction holds beside the samples read (complex64 copy, checks, mask).
_WORKING_BYTES = 16


def _read_h5(p: Path, slice_index: int | None) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """fastMRI's ``kspace`` (one slice), its ``mask`` and its parsed ``ismrmrd_header`` (None where absent)."""
    import h5py

    try:
        with h5py.File(p, "r") as f:
            check_hdf5_links(p, f)
            ds = f.get("kspace")
            if not isinstance(ds, h5py.Dataset):
                raise MedinrError(f"{p} has no 'kspace' dataset (fastMRI layout expected)")
            header = _read_h5_header(p, f)
            slices = ds.ndim == 4 or (ds.ndim == 3 and (slice_index is not None or _single_coil_slices(f, ds, header)))
            selection = _h5_selection(p, ds, slice_index, slices)
            kspace = np.asarray(ds[selection])
            mask = _read_h5_mask(p, f)
    except MedinrError:
        raise
    except Exception as exc:
        raise MedinrError(f"cannot read {p}: {terminal_safe(str(exc).splitlines()[0] if str(exc) else exc)}") from None
    return (kspace[None] if kspace.ndim == 2 else kspace), mask, header


#: The largest ``ismrmrd_header`` read (fastMRI's are about 10 kB).
_HEADER_BYTES = 1 << 20


def _read_h5_header(p: Path, f: "h5py.File") -> dict | None:  # noqa: F821
    import h5py

    ds = f.get("ismrmrd_header")
    if ds is None:
        return None
    if not isinstance(ds, h5py.Dataset) or ds.shape != () or ds.dtype.kind not in "SOU":
        raise MedinrError(f"{p}: 'ismrmrd_header' is not one XML string")
    check_hdf5_dataset(p, ds, "ismrmrd_header")
    if int(ds.id.get_storage_size()) > _HEADER_BYTES:
        raise MedinrError(f"{p}: 'ismrmrd_header' is larger than {_HEADER_BYTES >> 20} MiB")
    from medinr.mri.mrd_io import parse_header

    return parse_header(ds[()], f"{p} ('ismrmrd_header')")


def _single_coil_slices(f: "h5py.File", ds: "h5py.Dataset", header: dict | None) -> bool:  # noqa: F821
    """Whether a 3D ``kspace`` is fastMRI's single-coil layout ``(slices, x, y)`` rather than one slice's coils
    ``(coils, x, y)``: the file holds fastMRI's single-coil reference (``reconstruction_esc``, the emulated single
    coil), or its header names a coil count other than the first axis's length. Read as coils, a 35-slice knee file
    was reconstructed as 35 coils of one slice."""
    if "reconstruction_esc" in f:
        return True
    coils = header.get("receiver_channels") if header is not None else None
    return coils is not None and int(coils) != int(ds.shape[0])


def _h5_selection(p: Path, ds: "h5py.Dataset", slice_index: int | None, slices: bool) -> tuple:  # noqa: F821
    """What to read of the ``kspace`` dataset (``slices``: its first axis holds slices), after its type, shape and
    stored size were checked."""
    shape = tuple(int(n) for n in ds.shape)
    if slices:
        index = shape[0] // 2 if slice_index is None else slice_index
        if not -shape[0] <= index < shape[0]:
            raise MedinrError(f"slice {index} is outside the {shape[0]} slices of {p}")
        selection, read = (index,), shape[1:]
    else:
        selection, read = (), shape
    read = read if len(read) != 2 else (1, *read)
    _check_kspace_header(p, read, ds.dtype, " ('kspace')")
    check_file_holds(f"{p} ('kspace')", shape, ds.dtype.itemsize, int(ds.id.get_storage_size()),
                     compressed=bool(ds.compression or ds.shuffle or ds.fletcher32 or ds.scaleoffset))
    check_budget(array_bytes(read, ds.dtype.itemsize + _WORKING_BYTES),
                 f"reading {p} ({'x'.join(map(str, read))} k-space samples)")
    return selection


def _read_h5_mask(p: Path, f: "h5py.File") -> np.ndarray | None:  # noqa: F821
    import h5py

    ds = f.get("mask")
    if ds is None:
        return None
    if not isinstance(ds, h5py.Dataset):
        raise MedinrError(f"{p}: 'mask' is not a dataset")
    check_numeric_dtype(f"{p} ('mask')", ds.dtype, "samples")
    check_hdf5_dataset(p, ds, "mask")
    check_file_holds(f"{p} ('mask')", ds.shape, ds.dtype.itemsize, int(ds.id.get_storage_size()), compressed=True)
    check_budget(array_bytes(ds.shape, ds.dtype.itemsize + 1), f"reading the mask of {p}")
    return np.asarray(ds[()])
