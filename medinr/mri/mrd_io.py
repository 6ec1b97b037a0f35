"""ISMRMRD / MRD raw data (the vendor-neutral format of Gadgetron, BART, mrpro and twixtools conversions).

An MRD ``.h5`` holds a group (``dataset`` by default) with an ``xml`` header and a ``data`` table of
acquisitions: one readout each, ``[coils, samples]`` complex with its header (flags, encoding counters,
orientation) and, for non-Cartesian scans, a trajectory ``[samples, dims]``. The reader

- parses the header with the ``ismrmrd`` package (encoded matrix, field of view, trajectory type, limits);
- reads the acquisition headers first (one HDF5 field, no sample data) and checks the declared sizes against
  the memory budget before reading any samples;
- separates noise-adjustment scans (flag ``ACQ_IS_NOISE_MEASUREMENT``, returned for whitening), skips
  navigator, phase-correction, dummy and feedback readouts, keeps one slice and the first contrast;
- returns Cartesian data (no trajectory: lines placed by ``kspace_encode_step_1``/``_2`` around the limits'
  centre, repeated lines averaged) as :class:`~medinr.mri.kspace_io.MeasuredKspace` ``[coils, x, y(, z)]``
  (readout first, medinr's convention), and non-Cartesian data as
  :class:`~medinr.mri.noncart_kspace.NonCartesianKspace` with the trajectory converted to 1/FOV units
  (:func:`~medinr.mri.noncart_kspace.to_fov_units`); a 2D trajectory on a 3D encoding is a stack of stars
  (``kspace_encode_step_2`` gives kz).

ISMRMRD axes map to medinr's array axes directly: x (readout) -> axis 0, y -> axis 1, z -> axis 2. Cartesian data lose
the readout oversampling that the header declares (an encoded field of view along x larger than the reconstructed
one), as the scanner's reconstruction does, unless the caller keeps it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medinr.errors import MedinrError
from medinr.filecheck import check_geometry, check_hdf5_dataset, check_hdf5_links
from medinr.geometry import Geometry
from medinr.mri.measured import MeasuredKspace, to_recon_field_of_view
from medinr.mri.noncart_kspace import NonCartesianKspace, diagonal_geometry, to_fov_units
from medinr.resources import check_budget

# ISMRMRD acquisition flags (bit = flag - 1), from ismrmrd.constants.
FLAG_NOISE = 19
#: Readouts that are not image data: navigators, phase correction, feedback, dummy scans, stabilisation.
FLAGS_SKIPPED = (23, 24, 26, 27, 28, 29, 30, 31)
NON_CARTESIAN = ("radial", "goldenangle", "spiral", "other")


def _has_flag(flags: np.ndarray, flag: int) -> np.ndarray:
    return (flags.astype(np.uint64) >> np.uint64(flag - 1)) & np.uint64(1) == 1


def mrd_group(path: str | os.PathLike) -> str | None:
    """The name of the ISMRMRD dataset group of an HDF5 file (a group holding an ``xml`` header), or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = ["dataset"] + sorted(k for k in f.keys() if k != "dataset")
            for name in names:
                if name in f and isinstance(f[name], h5py.Group) and "xml" in f[name]:
                    return name
    except Exception:
        return None
    return None


def is_mrd_file(path: str | os.PathLike) -> bool:
    """True for an HDF5 file holding an ISMRMRD dataset (fastMRI files hold a top-level ``kspace`` instead)."""
    return Path(path).suffix.lower() in (".h5", ".hdf5", ".mrd") and mrd_group(path) is not None


def parse_header(xml: bytes | str, where: str) -> dict[str, Any]:
    """Encoded space, recon space, trajectory type, limit centres and coil count of the first encoding."""
    import ismrmrd.xsd

    try:
        head = ismrmrd.xsd.CreateFromDocument(xml)
        enc = head.encoding[0]
    except Exception as exc:
        raise MedinrError(f"{where} has an invalid ISMRMRD XML header: {str(exc).splitlines()[0]}") from None

    def triple(v: Any, cast: type) -> tuple:
        return (cast(v.x), cast(v.y), cast(v.z))

    limits = enc.encodingLimits

    def centre(lim: Any, n: int) -> int:
        return int(lim.center) if lim is not None else n // 2

    matrix = triple(enc.encodedSpace.matrixSize, int)
    system = head.acquisitionSystemInformation
    return {
        "matrix": matrix,
        "fov_mm": triple(enc.encodedSpace.fieldOfView_mm, float),
        "recon_matrix": triple(enc.reconSpace.matrixSize, int),
        "recon_fov_mm": triple(enc.reconSpace.fieldOfView_mm, float),
        "trajectory": getattr(enc.trajectory, "value", str(enc.trajectory)),
        "centre": (centre(limits.kspace_encoding_step_1, matrix[1]), centre(limits.kspace_encoding_step_2, matrix[2])),
        "receiver_channels": None if system is None else system.receiverChannels,
    }


def _read_table(path: Path, slice_index: int | None) -> tuple[dict[str, Any], np.ndarray, np.ndarray, Any]:
    """Open the file, parse the header, read every acquisition header; return (header, heads, imaging idx, file)."""
    import h5py

    group = mrd_group(path)
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise MedinrError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    try:
        check_hdf5_links(path, f)  # external links, virtual datasets, external storage: before anything is read
        for name in ("xml", "data"):
            if isinstance(f[group].get(name), h5py.Dataset):
                check_hdf5_dataset(path, f[group][name], f"{group}/{name}")
        xml = f[group]["xml"][0]
        header = parse_header(xml, str(path))
        _check_encoding(header, path)
        header["group"] = group
        if "data" not in f[group] or f[group]["data"].shape[0] == 0:
            raise MedinrError(f"{path} is an ISMRMRD file with no acquisitions")
        # an acquisition header is 340 bytes: refuse a table of headers larger than the budget before reading it
        check_budget(400.0 * f[group]["data"].shape[0], f"reading the {f[group]['data'].shape[0]} acquisition "
                     f"headers of {path.name}")
        heads = f[group]["data"].fields("head")[()]
    except MedinrError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise MedinrError(f"cannot read the acquisitions of {path}: {str(exc).splitlines()[0]}") from None
    return header, heads, _select(heads, header, slice_index, path), f


def _check_encoding(header: dict[str, Any], path: Path) -> None:
    """The encoded matrix and field of view of the header, before any size or geometry is derived from them."""
    matrix, fov = header["matrix"], header["fov_mm"]
    if min(matrix[:2]) < 3 or max(matrix) > 1 << 16:
        raise MedinrError(f"{path}: the header's encoded matrix {'x'.join(map(str, matrix))} is not an image grid "
                          "(at least 3 samples along x and y, at most 65536)")
    ndim = 3 if matrix[2] > 1 else 2
    affine = np.diag([*(np.float64(f) / n for f, n in zip(fov[:ndim], matrix[:ndim])), *([1.0] * (4 - ndim))])
    check_geometry(f"{path} (encoded field of view {'x'.join(f'{f:g}' for f in fov[:ndim])} mm)", affine, ndim)


def _select(heads: np.ndarray, header: dict[str, Any], slice_index: int | None, path: Path) -> np.ndarray:
    """Indices of the imaging readouts of one slice and the first contrast; records what was dropped."""
    flags = heads["flags"]
    skip = np.zeros(len(heads), bool)
    for flag in (FLAG_NOISE, *FLAGS_SKIPPED):
        skip |= _has_flag(flags, flag)
    skip |= heads["encoding_space_ref"] != 0
    imaging = np.flatnonzero(~skip)
    if imaging.size == 0:
        raise MedinrError(f"{path} holds no imaging acquisitions (only noise, navigator or calibration scans)")
    idx = heads["idx"][imaging]
    slices = np.unique(idx["slice"])
    chosen = int(slices[len(slices) // 2]) if slice_index is None else int(slice_index)
    if chosen not in slices:
        raise MedinrError(f"slice {chosen} is not among the slices {slices.tolist()} of {path}")
    contrasts = np.unique(idx["contrast"])
    keep = (idx["slice"] == chosen) & (idx["contrast"] == contrasts[0])
    header["selection"] = {"slice": chosen, "slices": int(slices.size), "contrasts": int(contrasts.size),
                           "skipped_readouts": int(skip.sum() - _has_flag(flags, FLAG_NOISE).sum())}
    pooled = {name: int(np.unique(idx[name][keep]).size) for name in ("repetition", "phase", "set", "average")}
    header["selection"]["pooled"] = {k: v for k, v in pooled.items() if v > 1}
    return imaging[keep]


def _check_consistency(heads: np.ndarray, sel: np.ndarray, noise: np.ndarray, path: Path) -> None:
    h = heads[sel]
    coils = np.unique(h["active_channels"])
    if coils.size > 1:
        raise MedinrError(f"{path}: acquisitions have different coil counts ({', '.join(map(str, coils))})")
    if noise.size and np.any(heads[noise]["active_channels"] != coils[0]):
        raise MedinrError(f"{path}: the noise scan has {heads[noise]['active_channels'][0]} coils, the data {coils[0]}")
    dims = np.unique(h["trajectory_dimensions"])
    if dims.size > 1:
        raise MedinrError(f"{path}: acquisitions have trajectories of different dimensions ({dims.tolist()})")
    if dims[0] not in (0, 2, 3):
        raise MedinrError(f"{path}: a trajectory of {dims[0]} dimensions (MRD trajectories are 2D or 3D)")
    if dims[0] and np.unique(h["number_of_samples"] - h["discard_pre"] - h["discard_post"]).size > 1:
        raise MedinrError(f"{path}: non-Cartesian readouts of different lengths are not supported")


def _budget(heads: np.ndarray, sel: np.ndarray, header: dict[str, Any], path: Path) -> None:
    """Refuse before reading when the declared sizes exceed the memory budget."""
    h = heads[sel]
    samples = float(np.sum(h["number_of_samples"].astype(np.float64) * h["active_channels"]))
    traj = float(np.sum(h["number_of_samples"].astype(np.float64) * h["trajectory_dimensions"]))
    grid = float(np.prod(header["matrix"], dtype=np.float64)) * float(h["active_channels"].max())
    check_budget(2 * 8 * samples + 2 * 4 * traj + 4 * 8 * grid,
                 f"reading {path.name} ({len(sel)} readouts, {int(h['active_channels'].max())} coils, "
                 f"matrix {'x'.join(map(str, header['matrix']))})")


def _read_arrays(table: Any, heads: np.ndarray, rows: np.ndarray, with_traj: bool) -> tuple[list, list]:
    """Sample data ``[coils, samples]`` (and trajectories ``[samples, dims]``) of the given rows of the HDF5
    acquisition table, trimmed of the discarded samples, reversed where flagged."""
    group = table
    data, trajs = [], []
    if rows.size == 0:
        return data, trajs
    raw = group.fields("data")[rows]
    raw_traj = group.fields("traj")[rows] if with_traj else None
    for n, row in enumerate(rows):
        h = heads[row]
        s, c = int(h["number_of_samples"]), int(h["active_channels"])
        d = np.asarray(raw[n], np.float32).view(np.complex64).reshape(c, s)
        lo, hi = int(h["discard_pre"]), s - int(h["discard_post"])
        d = d[:, lo:hi]
        if _has_flag(np.asarray(h["flags"]), 22):  # ACQ_IS_REVERSE: readout acquired backwards
            d = d[:, ::-1]
        data.append(d)
        if with_traj:
            t = np.asarray(raw_traj[n], np.float32).reshape(s, int(h["trajectory_dimensions"]))
            trajs.append(t[lo:hi])
    return data, trajs


def _affine_geometry(matrix: tuple[int, ...], fov_mm: tuple[float, ...], head: np.void, where: str) -> Geometry:
    """Scanner geometry from the first readout's orientation (LPS -> RAS), or axis-aligned when it has none.

    ISMRMRD's ``position`` is the centre of the encoded volume, which is voxel ``N // 2`` of every axis.
    """
    dirs = np.stack([np.asarray(head[k], np.float64) for k in ("read_dir", "phase_dir", "slice_dir")], axis=1)
    if not np.allclose(dirs.T @ dirs, np.eye(3), atol=1e-3):
        return diagonal_geometry(matrix, fov_mm, where)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    spacing = [f / n for f, n in zip(fov_mm, matrix)]
    if len(matrix) == 2:
        spacing.append(1.0)  # a 2D slice: unit vector along the slice normal
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ dirs * np.asarray(spacing)[None, :]
    centre_index = np.array([n // 2 for n in matrix] + ([0] if len(matrix) == 2 else []), np.float64)
    affine[:3, 3] = lps_to_ras @ np.asarray(head["position"], np.float64) - affine[:3, :3] @ centre_index
    return Geometry(matrix, check_geometry(where, affine, len(matrix)))


def read_mrd(path: str | os.PathLike, slice_index: int | None = None, keep_oversampling: bool = False):
    """Read an ISMRMRD / MRD file: Cartesian data as ``MeasuredKspace``, non-Cartesian as ``NonCartesianKspace``.

    Parameters
    ----------
    path : path-like
        An HDF5 file with an ISMRMRD dataset group.
    slice_index : int, optional
        The slice counter (``idx.slice``) of a multi-slice 2D scan (default: the middle one present).
    keep_oversampling : bool
        Keep Cartesian data on the encoded grid where the header's encoded field of view along the readout is
        larger than the reconstructed one (readout oversampling; removed by default:
        :func:`medinr.mri.measured.remove_readout_oversampling`). Non-Cartesian data keep their samples: the
        trajectory in 1/FOV units places them.

    Raises
    ------
    MedinrError
        With one line for a file that is not valid ISMRMRD, holds no acquisitions, mixes coil counts or trajectory
        dimensions, holds NaN samples, has neither a trajectory nor encoding counters, a trajectory that fits
        no unit system, or declares more data than the memory budget allows.
    """
    p = Path(path)
    if not p.is_file():
        raise MedinrError(f"file not found: {p}")
    header, heads, sel, f = _read_table(p, slice_index)
    with f:
        noise_rows = np.flatnonzero(_has_flag(heads["flags"], FLAG_NOISE))
        _check_consistency(heads, sel, noise_rows, p)
        _budget(heads, sel, header, p)
        non_cartesian = int(heads[sel[0]]["trajectory_dimensions"]) > 0
        table = f[header["group"]]["data"]
        data, trajs = _read_arrays(table, heads, sel, non_cartesian)
        noise_data, _ = _read_arrays(table, heads, noise_rows, False)
    if not all(np.isfinite(d).all() for d in data) or not all(np.isfinite(t).all() for t in trajs):
        raise MedinrError(f"{p} contains NaN or infinite k-space samples or trajectory positions")
    noise = np.concatenate(noise_data, axis=1).astype(np.complex64) if noise_data else None
    dwell = _dwell_ratio(heads, sel, noise_rows)
    meta = {"format": "ISMRMRD", "trajectory_type": header["trajectory"], **header["selection"]}
    if non_cartesian:
        return _non_cartesian(p, header, heads, sel, data, trajs, noise, dwell, meta)
    measured = _cartesian(p, header, heads[sel], data, noise, dwell, meta)
    return measured if keep_oversampling else to_recon_field_of_view(measured, header["fov_mm"][0],
                                                                      header["recon_fov_mm"][0])


def _line_indices(p: Path, header: dict[str, Any], heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices (y, z) of Cartesian readouts from their encoding counters around the limits' centres."""
    nx, ny, nz = header["matrix"]
    if header["trajectory"] in NON_CARTESIAN:
        raise MedinrError(f"{p} declares a {header['trajectory']} trajectory but its acquisitions carry none (no traj)")
    steps = np.stack([heads["idx"]["kspace_encode_step_1"], heads["idx"]["kspace_encode_step_2"]], 1).astype(int)
    if len(heads) > 1 and max(ny, nz) > 1 and len(np.unique(steps, axis=0)) == 1:
        raise MedinrError(f"{p} has neither a trajectory nor encoding counters: all {len(heads)} readouts sit at "
                          f"kspace_encode_step_1 = {steps[0, 0]}")
    ky = steps[:, 0] - header["centre"][0] + ny // 2
    kz = steps[:, 1] - header["centre"][1] + nz // 2 if nz > 1 else np.zeros(len(heads), int)
    if ky.min() < 0 or ky.max() >= ny or kz.min() < 0 or kz.max() >= max(nz, 1):
        raise MedinrError(f"{p}: encoding counters reach outside the encoded matrix {nx}x{ny}x{nz}")
    return ky, kz


def _cartesian(p: Path, header: dict[str, Any], heads: np.ndarray, data: list, noise: np.ndarray | None,
               dwell: float, meta: dict[str, Any]) -> MeasuredKspace:
    """Cartesian readouts on the encoded grid ``[coils, x, y(, z)]``, repeated lines averaged, with their mask."""
    nx, ny, nz = header["matrix"]
    grid = (nx, ny, nz) if nz > 1 else (nx, ny)
    ky, kz = _line_indices(p, header, heads)
    acc = np.zeros((data[0].shape[0], *grid), np.complex128)
    count = np.zeros(grid, np.int32)
    for d, h, y, z in zip(data, heads, ky, kz):
        centre = int(h["center_sample"]) - int(h["discard_pre"])
        if centre <= 0 and d.shape[1] >= nx:  # centre_sample not set by the writer: a symmetric readout
            centre = d.shape[1] // 2
        lo = nx // 2 - centre
        if lo < 0 or lo + d.shape[1] > nx:
            raise MedinrError(f"{p}: a readout of {d.shape[1]} samples centred at {centre} does not fit the encoded "
                              f"matrix x = {nx}")
        where = (slice(lo, lo + d.shape[1]), y, z) if nz > 1 else (slice(lo, lo + d.shape[1]), y)
        acc[(slice(None), *where)] += d
        count[where] += 1
    kspace = (acc / np.maximum(count, 1)).astype(np.complex64)
    geometry = _affine_geometry(grid, tuple(header["fov_mm"][: len(grid)]), heads[0], str(p))
    meta["repeated_lines_averaged"] = int(count.max())
    return MeasuredKspace(kspace, count > 0, geometry, str(p), noise=noise, noise_dwell_ratio=dwell, meta=meta)


def _dwell_ratio(heads: np.ndarray, sel: np.ndarray, noise_rows: np.ndarray) -> float:
    if noise_rows.size == 0:
        return 1.0
    t_noise, t_data = float(heads[noise_rows[0]]["sample_time_us"]), float(heads[sel[0]]["sample_time_us"])
    return t_noise / t_data if t_noise > 0 and t_data > 0 else 1.0


def _stack_kz(traj: np.ndarray, heads: np.ndarray, header: dict[str, Any], path: Path) -> np.ndarray:
    """A 2D trajectory on a 3D encoding: kz (1/FOV units) from ``kspace_encode_step_2`` around its centre."""
    kz = heads["idx"]["kspace_encode_step_2"].astype(np.float64) - header["centre"][1]
    if np.abs(kz).max() > header["matrix"][2] / 2:
        raise MedinrError(f"{path}: kspace_encode_step_2 reaches beyond the encoded matrix z = {header['matrix'][2]}")
    return np.concatenate([traj, np.broadcast_to(kz[:, None, None], (*traj.shape[:2], 1))], axis=-1)


def _non_cartesian(p: Path, header: dict[str, Any], heads: np.ndarray, sel: np.ndarray, data: list, trajs: list,
                   noise: np.ndarray | None, dwell: float, meta: dict[str, Any]) -> NonCartesianKspace:
    matrix3 = header["matrix"]
    traj = np.stack(trajs).astype(np.float64)  # (R, S, d)
    d = traj.shape[-1]
    if matrix3[2] <= 1 and d == 3:
        if np.abs(traj[..., 2]).max() > 1e-6:
            raise MedinrError(f"{p}: a 3D trajectory for a 2D encoding (matrix z = {matrix3[2]})")
        traj, d = traj[..., :2], 2
    ndim = 3 if matrix3[2] > 1 else 2
    matrix = tuple(int(n) for n in matrix3[:ndim])
    fov = tuple(float(x) for x in header["fov_mm"][:ndim])
    traj, units = to_fov_units(traj, matrix[:d], str(p))
    if ndim == 3 and d == 2:
        traj = _stack_kz(traj, heads[sel], header, p)
        meta["stack_of_stars"] = True
    samples = np.stack(data, axis=1).astype(np.complex64)  # (C, R, S)
    geometry = _affine_geometry(matrix, fov, heads[sel[0]], str(p))
    return NonCartesianKspace(samples, traj.astype(np.float32), matrix, fov, geometry, noise, dwell, str(p), units,
                              meta)
