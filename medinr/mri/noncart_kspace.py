"""Measured non-Cartesian k-space: the typed result of every reader, trajectory units, and ``.npz`` input.

Every reader returns a :class:`NonCartesianKspace` whose trajectory is in medinr's one convention (cycles per
field of view along each image array axis, see :mod:`medinr.mri.nufft`); :func:`to_fov_units` detects how a
file stored it (1/FOV units spanning ``[-N/2, N/2)``, or normalised to ``[-0.5, 0.5)``) and converts, or
refuses a trajectory that fits neither. ``.npz`` input holds ``kspace`` ``[coils, readouts, samples]`` complex
and ``traj`` ``[readouts, samples, 2 or 3]`` in 1/FOV units; its matrix and field of view come from the caller
(``--matrix``, ``--fov``) or from optional ``matrix`` and ``fov_mm`` arrays in the file.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinr.errors import MedinrError
from medinr.filecheck import check_geometry
from medinr.geometry import Geometry
from medinr.resources import check_budget

#: How far past the edge of k-space (``N/2``, or 0.5 normalised) a trajectory may reach, as a fraction.
EDGE_TOLERANCE = 0.02
#: A trajectory must reach at least this fraction of the edge to be recognised in a unit system.
EDGE_MINIMUM = 0.4
UNITS_FOV = "1/FOV (cycles per field of view, spanning [-N/2, N/2))"
UNITS_NORMALISED = "normalised (spanning [-0.5, 0.5), multiplied by the matrix size)"


@dataclass
class NonCartesianKspace:
    """Measured non-Cartesian multi-coil k-space with its trajectory and image grid.

    Attributes
    ----------
    samples : complex64 ``(C, readouts, samples)``
    traj : float32 ``(readouts, samples, d)``
        Sample positions in 1/FOV units along image array axes ``0..d-1`` (medinr's convention).
    matrix : tuple of int
        The image grid ``(N_0, ..., N_{d-1})`` the data were encoded for.
    fov_mm : tuple of float
        Field of view per axis (mm); voxel size ``fov_mm / matrix``.
    geometry : Geometry
        The image grid in the world (RAS+ mm), from the scanner's orientation when the file has it.
    noise : complex64 ``(C, n)`` or None
        Samples of a noise-adjustment scan (see :meth:`noise_estimate`).
    noise_dwell_ratio : float
        Dwell time of the noise scan over that of the readouts.
    source : str
    units : str
        How the file stored the trajectory (:data:`UNITS_FOV` or :data:`UNITS_NORMALISED`).
    meta : dict
        What else the reader found (trajectory type, pooled counters, the encoding space used), for metrics.json.
    """

    samples: np.ndarray
    traj: np.ndarray
    matrix: tuple[int, ...]
    fov_mm: tuple[float, ...]
    geometry: Geometry
    noise: np.ndarray | None
    noise_dwell_ratio: float
    source: str
    units: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def coils(self) -> int:
        return int(self.samples.shape[0])

    @property
    def readouts(self) -> int:
        return int(self.samples.shape[1])

    def noise_estimate(self):
        """The coil noise covariance of the noise-adjustment scan (:func:`medinr.mri.noise.noise_from_scan`),
        or None when the file has none (then estimate it from the outer k-space,
        :func:`medinr.mri.noise.estimate_noise_samples`)."""
        if self.noise is None:
            return None
        from medinr.mri.noise import noise_from_scan

        return noise_from_scan(self.noise, self.noise_dwell_ratio)

    def describe(self) -> dict[str, Any]:
        """What was read, for metrics.json."""
        return {
            "source": self.source,
            "coils": self.coils,
            "readouts": self.readouts,
            "samples_per_readout": int(self.samples.shape[2]),
            "matrix": list(self.matrix),
            "fov_mm": list(self.fov_mm),
            "trajectory_units_in_file": self.units,
            "noise_scan_samples": 0 if self.noise is None else int(self.noise.shape[1]),
            **self.meta,
        }


def to_fov_units(traj: np.ndarray, matrix: tuple[int, ...], where: str) -> tuple[np.ndarray, str]:
    """Detect the units of a trajectory and convert it to 1/FOV units.

    A trajectory in 1/FOV units reaches ``N_a / 2`` on some axis; a normalised one reaches 0.5. Each is accepted
    when its largest ``|k_a|`` relative to that edge lies in ``(EDGE_MINIMUM, 1 + EDGE_TOLERANCE]``.

    Returns
    -------
    (traj in 1/FOV units as float32, the units found)

    Raises
    ------
    MedinrError
        When it fits neither (e.g. radians, or a matrix that does not match the trajectory).
    """
    traj = np.asarray(traj, np.float64)
    half = np.asarray(matrix, np.float64) / 2.0
    peak = np.abs(traj.reshape(-1, traj.shape[-1])).max(axis=0)
    fov_fit = float((peak / half).max())
    norm_fit = float((peak / 0.5).max())
    if EDGE_MINIMUM < fov_fit <= 1 + EDGE_TOLERANCE:
        return traj.astype(np.float32), UNITS_FOV
    if EDGE_MINIMUM < norm_fit <= 1 + EDGE_TOLERANCE:
        return (traj * np.asarray(matrix, np.float64)).astype(np.float32), UNITS_NORMALISED
    raise MedinrError(
        f"{where}: the trajectory reaches |k| = {', '.join(f'{p:.4g}' for p in peak)} per axis, which fits neither "
        f"1/FOV units (edge at N/2 = {', '.join(f'{h:g}' for h in half)} for matrix {'x'.join(map(str, matrix))}) "
        "nor normalised units (edge at 0.5)"
    )


def diagonal_geometry(matrix: tuple[int, ...], fov_mm: tuple[float, ...], where: str = "the encoding") -> Geometry:
    """Axis-aligned voxels of ``fov_mm / matrix`` mm with the grid centre (index ``N // 2``) at the origin
    (voxel sizes checked: :func:`medinr.filecheck.check_geometry`)."""
    affine = np.eye(4)
    with np.errstate(all="ignore"):
        for a, (n, f) in enumerate(zip(matrix, fov_mm)):
            affine[a, a] = f / n
            affine[a, 3] = -(f / n) * (n // 2)
    return Geometry(matrix, check_geometry(where, affine, len(matrix)))


def _npz_sizes(path: Path) -> dict[str, int]:
    """Uncompressed bytes of each array in an .npz (from the zip directory, nothing is read)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {info.filename.removesuffix(".npy"): info.file_size for info in z.infolist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise MedinrError(f"cannot read {path}: {exc}") from None


def _npz_grid(npz: Any, matrix: tuple[int, ...] | None, fov_mm: tuple[float, ...] | None, d: int, where: str):
    if matrix is None and "matrix" in npz:
        matrix = tuple(int(n) for n in np.asarray(npz["matrix"]).reshape(-1))
    if fov_mm is None and "fov_mm" in npz:
        fov_mm = tuple(float(f) for f in np.asarray(npz["fov_mm"]).reshape(-1))
    if matrix is None or fov_mm is None:
        raise MedinrError(f"{where} holds no image matrix and field of view: give --matrix and --fov")
    if len(matrix) != d or len(fov_mm) != d or min(matrix) < 4 or not all(np.isfinite(fov_mm)) or min(fov_mm) <= 0:
        raise MedinrError(f"{where}: the matrix {matrix} and field of view {fov_mm} must give {d} sizes "
                          f"(>= 4 samples, > 0 mm) for a {d}D trajectory")
    return tuple(matrix), tuple(fov_mm)


def load_npz(path: str | os.PathLike, matrix: tuple[int, ...] | None = None,
             fov_mm: tuple[float, ...] | None = None) -> NonCartesianKspace:
    """Read ``kspace`` ``[coils, readouts, samples]`` and ``traj`` ``[readouts, samples, d]`` from an ``.npz``.

    Optional arrays: ``matrix`` and ``fov_mm`` (overridden by the arguments), ``noise`` ``[coils, n]``.
    """
    p = Path(path)
    sizes = _npz_sizes(p)
    if "kspace" not in sizes or "traj" not in sizes:
        raise MedinrError(f"{p} needs arrays 'kspace' [coils, readouts, samples] and 'traj' [readouts, samples, d]")
    check_budget(2.5 * sum(sizes.values()), f"reading {p.name}")
    try:
        npz = np.load(p, allow_pickle=False)
        kspace, traj = npz["kspace"], npz["traj"]
        noise = npz["noise"] if "noise" in npz else None
    except MedinrError:
        raise
    except Exception as exc:
        raise MedinrError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None
    if not np.iscomplexobj(kspace) or kspace.ndim != 3:
        raise MedinrError(f"{p}: 'kspace' must be complex [coils, readouts, samples], got {kspace.dtype} "
                          f"{kspace.shape}")
    if traj.ndim != 3 or traj.shape[-1] not in (2, 3) or traj.shape[:2] != kspace.shape[1:]:
        raise MedinrError(f"{p}: 'traj' must be [readouts, samples, 2 or 3] matching kspace {kspace.shape}, "
                          f"got {traj.shape}")
    if not np.all(np.isfinite(kspace)) or not np.all(np.isfinite(traj)):
        raise MedinrError(f"{p} contains NaN or infinite k-space values or trajectory positions")
    matrix, fov_mm = _npz_grid(npz, matrix, fov_mm, traj.shape[-1], str(p))
    traj, units = to_fov_units(traj, matrix, str(p))
    if noise is not None and (noise.ndim != 2 or noise.shape[0] != kspace.shape[0] or not np.iscomplexobj(noise)):
        raise MedinrError(f"{p}: 'noise' must be complex [coils, n] with the {kspace.shape[0]} coils of kspace")
    return NonCartesianKspace(
        kspace.astype(np.complex64), traj, matrix, fov_mm, diagonal_geometry(matrix, fov_mm, str(p)),
        None if noise is None else noise.astype(np.complex64), 1.0, str(p), units, {"format": "npz"},
    )
