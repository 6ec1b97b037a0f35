"""Gridding of non-Cartesian k-space: density compensation, the gridded ("zero-filled") image and coil maps.

The gridding reconstruction is the density-compensated adjoint ``A^H W y`` of the non-uniform SENSE model
(:class:`medinr.mri.nufft.NufftSenseOp`): the non-Cartesian counterpart of the zero-filled image. The density
compensation ``W`` is the k-space area each sample stands for, in (1/FOV)^2 units (Voronoi cells, or the
Pipe-Menon iteration), scaled so that gridding a constant image gives 1 at its centre: gridded images are in the
units of the image. Coil maps come from ESPIRiT on the Cartesian k-space of the gridded calibration centre (the
disc around k = 0 that every readout samples densely).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.mri.coils import espirit_maps, normalise_rss
from medinr.mri.config import DENSITY_METHODS
from medinr.mri.fft import fftc
from medinr.mri.nufft import NufftOp, NufftSenseOp

DCF_METHODS = DENSITY_METHODS
#: Widest calibration box (samples per axis) the coil maps are estimated from, as for Cartesian ESPIRiT.
MAX_CALIBRATION = 24
#: The fewest calibration samples per axis ESPIRiT can work with (see :func:`medinr.mri.coils.espirit_maps`).
MIN_CALIBRATION = 6


def _normalise_dcf(weights: np.ndarray, traj: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Scale ``weights`` so that gridding a constant image gives 1 at the image centre."""
    op = NufftOp(traj, grid, 1)
    ones = torch.ones((1, *grid), dtype=torch.complex128)
    centre = tuple(n // 2 for n in grid)
    gridded = op.H(op(ones) * torch.from_numpy(weights.reshape(1, *traj.shape[:-1])))
    value = float(gridded[(0, *centre)].real)
    if not value > 0:
        raise MedinrError("the density compensation is degenerate (the trajectory does not sample k = 0)")
    return (weights / value).astype(np.float32)


def _stack_planes(traj: np.ndarray) -> list[np.ndarray] | None:
    """Readout indices of each kz plane when ``traj`` is a stack of identical 2D trajectories (stack of stars)."""
    if traj.shape[-1] != 3:
        return None
    kz = traj[..., 2]
    if not np.all(kz == kz[:, :1]) or not np.allclose(kz, np.round(kz)):
        return None
    planes = [np.flatnonzero(kz[:, 0] == z) for z in np.unique(kz[:, 0])]
    first = traj[planes[0], :, :2]
    if any(len(p) != len(planes[0]) or not np.allclose(traj[p, :, :2], first) for p in planes):
        return None
    return planes


def density_compensation(traj: np.ndarray, grid: Sequence[int], method: str = "voronoi",
                         iterations: int = 30) -> np.ndarray:
    """Density compensation weights (k-space area per sample, 1/FOV^2 units), shape ``traj.shape[:-1]``.

    Parameters
    ----------
    traj : ndarray ``(readouts, samples, d)``
        Trajectory in 1/FOV units.
    grid : sequence of int
        Image matrix.
    method : {'voronoi', 'pipe'}
        ``voronoi``: the area of each sample's Voronoi cell (mri-nufft's, which splits the cell of samples
        repeated at k = 0; open cells at the edge are extrapolated): the exact quadrature weights, the best
        gridding at and near Nyquist. ``pipe``: the Pipe-Menon fixed point through finufft's spreading kernel
        (mri-nufft), faster and usable in 3D, but its weights saturate where readouts are farther apart than
        the kernel (heavily undersampled radial), which blurs.
    iterations : int
        Pipe-Menon iterations.

    A stack of stars (identical 2D trajectories on integer kz planes) gets the 2D weights of one plane on every
    plane (Cartesian along kz).

    Returns
    -------
    ndarray float32, scaled so that gridding a constant image gives 1 at its centre.
    """
    grid = tuple(int(n) for n in grid)
    if method not in DCF_METHODS:
        raise MedinrError(f"unknown density compensation '{method}' ({', '.join(DCF_METHODS)})")
    traj = np.asarray(traj)
    planes = _stack_planes(traj)
    if planes is not None:  # a stack of stars: the in-plane weights of one partition, on every partition
        plane = density_compensation(traj[planes[0], :, :2], grid[:2], method, iterations)
        weights = np.empty(traj.shape[:-1], np.float64)
        for p in planes:
            weights[p] = plane
        return _normalise_dcf(weights, traj, grid)
    unit = (np.asarray(traj, np.float64) / np.asarray(grid)).reshape(-1, len(grid))  # [-0.5, 0.5) for mri-nufft
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mri-nufft announces the unit conversion it does not need to do
        if method == "voronoi":
            from mrinufft.density import voronoi

            weights = np.abs(voronoi(unit))
        else:
            from mrinufft.density import pipe

            weights = np.abs(pipe(unit.astype(np.float32), grid, backend="finufft", max_iter=iterations,
                                  normalize=False))
    if not np.all(np.isfinite(weights)):
        raise MedinrError(f"the {method} density compensation failed (non-finite weights)")
    return _normalise_dcf(weights.reshape(np.asarray(traj).shape[:-1]).astype(np.float64), np.asarray(traj), grid)


def gridding_coil_images(samples: np.ndarray, traj: np.ndarray, grid: Sequence[int], dcf: np.ndarray) -> np.ndarray:
    """Gridded coil images ``F^H (w * y_c)``: complex64 ``(C, *grid)`` in the image's units."""
    samples = np.asarray(samples, np.complex64)
    op = NufftOp(traj, grid, samples.shape[0])
    weighted = torch.from_numpy(samples) * torch.from_numpy(np.asarray(dcf, np.float32))
    return op.H(weighted).numpy()


def gridding(samples: np.ndarray, traj: np.ndarray, dcf: np.ndarray, maps: np.ndarray | None = None,
             grid: Sequence[int] | None = None) -> np.ndarray:
    """The gridding reconstruction: coil-combined ``A^H W y`` (with ``maps``) or the root-sum-of-squares.

    Parameters
    ----------
    samples : complex ndarray ``(C, readouts, samples)``
    traj : ndarray ``(readouts, samples, d)`` in 1/FOV units
    dcf : ndarray ``(readouts, samples)`` (:func:`density_compensation`)
    maps : complex ndarray ``(C, *grid)``, optional
        Unit-RSS coil maps: the result is complex. Without them it is the magnitude RSS of the gridded coil
        images (``grid`` then gives the matrix).

    Returns
    -------
    ndarray ``grid``: complex64 with maps, float32 (RSS) without.
    """
    samples = np.asarray(samples, np.complex64)
    if maps is None:
        if grid is None:
            raise MedinrError("gridding without coil maps needs the image matrix (grid)")
        coil = gridding_coil_images(samples, traj, grid, dcf)
        return np.sqrt(np.sum(np.abs(coil) ** 2, axis=0)).astype(np.float32)
    op = NufftSenseOp(torch.from_numpy(np.asarray(maps, np.complex64)), traj)
    weighted = torch.from_numpy(samples) * torch.from_numpy(np.asarray(dcf, np.float32))
    return op.H(weighted).numpy()


def calibration_width(traj: np.ndarray, grid: Sequence[int], max_width: int = MAX_CALIBRATION) -> int:
    """Width of the largest centred square of Cartesian k-space cells that all hold a sample (<= ``max_width``).

    Every cell ``[k - 1/2, k + 1/2)`` (1/FOV units) of that box contains at least one sample: the region is
    sampled at or above Nyquist, so gridding it is accurate. For golden-angle radial about ``2 spokes / pi``.
    """
    grid = tuple(int(n) for n in grid)
    cells = np.round(np.asarray(traj, np.float64).reshape(-1, len(grid))).astype(np.int64)
    half = max_width // 2 + 1
    inside = np.all(np.abs(cells) <= half, axis=1)
    hit = np.zeros((2 * half + 1,) * len(grid), bool)
    hit[tuple((cells[inside] + half).T)] = True
    width = 0
    for w in range(2, min(max_width, min(grid)) + 1, 2):
        box = tuple(slice(half - w // 2, half + w - w // 2) for _ in grid)
        if not hit[box].all():
            break
        width = w
    return width


def calibration_kspace(samples: np.ndarray, traj: np.ndarray, grid: Sequence[int], dcf: np.ndarray,
                       width: int) -> np.ndarray:
    """Cartesian multi-coil k-space ``(C, *grid)`` of the gridded calibration box (zeros outside it).

    Only samples inside the box (plus two cells) are gridded, so the aliasing of the undersampled outer
    k-space does not leak into the calibration data.
    """
    grid = tuple(int(n) for n in grid)
    traj = np.asarray(traj)
    near = np.all(np.abs(traj) <= width / 2 + 2, axis=-1)
    weights = np.where(near, np.asarray(dcf), 0).astype(np.float32)
    kspace = fftc(torch.from_numpy(gridding_coil_images(samples, traj, grid, weights)), len(grid)).numpy()
    box = tuple(slice(n // 2 - width // 2, n // 2 - width // 2 + width) for n in grid)
    out = np.zeros_like(kspace)
    out[(slice(None), *box)] = kspace[(slice(None), *box)]
    return out


def noncartesian_maps(samples: np.ndarray, traj: np.ndarray, grid: Sequence[int], dcf: np.ndarray,
                      max_width: int = MAX_CALIBRATION) -> np.ndarray:
    """ESPIRiT coil maps from the gridded calibration centre, unit RSS where non-zero: complex64 ``(C, *grid)``.

    Raises
    ------
    MedinrError
        When fewer than 6 x 6 central cells are sampled (too few readouts to calibrate).
    """
    samples = np.asarray(samples)
    if samples.shape[0] == 1:
        return np.ones((1, *grid), np.complex64)
    width = calibration_width(traj, grid, max_width)
    if width < MIN_CALIBRATION:
        raise MedinrError(
            f"only the central {width} x {width} k-space cells are sampled densely: too few readouts to estimate "
            "coil maps (ESPIRiT needs at least 6 x 6)"
        )
    maps = espirit_maps(calibration_kspace(samples, traj, grid, dcf, width), width)
    return normalise_rss(maps)
