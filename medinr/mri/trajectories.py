"""Non-Cartesian trajectories in medinr's convention: ``(readouts, samples, d)`` in cycles per field of view.

``traj[r, s, a]`` is the k-space position of sample ``s`` of readout ``r`` along image array axis ``a``, in
units of 1/FOV (a Cartesian sample at integer ``k_a`` in ``[-N_a/2, N_a/2)``; see :mod:`medinr.mri.nufft`).
Shapes other than square scale each axis with its own matrix size, so a radial spoke reaches the edge of
k-space of every axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medinr.errors import MedinrError

#: The golden angle for spokes through the centre (Winkelmann et al. 2007): 180 deg / golden ratio, radians.
GOLDEN_ANGLE = np.pi * (np.sqrt(5.0) - 1.0) / 2.0


def _check_grid(grid: Sequence[int], ndim: int = 2) -> tuple[int, ...]:
    grid = tuple(int(n) for n in grid)
    if len(grid) != ndim or min(grid) < 4:
        raise MedinrError(f"a {ndim}D trajectory needs a matrix of {ndim} sizes >= 4, got {grid}")
    return grid


def golden_angle_radial(spokes: int, grid: Sequence[int], oversampling: float = 2.0,
                        first_angle: float = 0.0) -> np.ndarray:
    """Golden-angle radial 2D: ``spokes`` full spokes through the centre, 111.25 deg apart.

    Parameters
    ----------
    spokes : int
        Number of spokes (readouts).
    grid : (int, int)
        Image matrix ``(N_0, N_1)``.
    oversampling : float
        Readout oversampling: ``round(oversampling * max(grid))`` samples per spoke, spaced
        ``1 / oversampling`` (1/FOV units along the longer axis) and spanning ``[-N/2, N/2)``.
    first_angle : float
        Angle of the first spoke (radians from array axis 0).

    Returns
    -------
    ndarray float32 ``(spokes, samples, 2)`` in 1/FOV units.
    """
    grid = _check_grid(grid)
    if spokes < 1 or oversampling <= 0:
        raise MedinrError(f"a radial trajectory needs spokes >= 1 and oversampling > 0, got {spokes}, {oversampling}")
    samples = int(round(oversampling * max(grid)))
    radius = (np.arange(samples) - samples / 2) / samples  # [-0.5, 0.5) of the k-space width
    angles = first_angle + GOLDEN_ANGLE * np.arange(spokes)
    direction = np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # (spokes, 2)
    traj = radius[None, :, None] * direction[:, None, :] * np.asarray(grid, np.float64)
    return traj.astype(np.float32)


def variable_density_spiral(interleaves: int, grid: Sequence[int], edge_undersampling: float = 4.0,
                            density_power: float = 2.0, oversampling: float = 2.0) -> np.ndarray:
    """An analytic variable-density spiral: ``interleaves`` rotated copies of one arm from the centre out.

    The arm is ``r(theta) = k_max (theta / Theta)^p`` (``p = density_power``; ``p = 1`` is Archimedean). The
    gap between neighbouring arms at radius ``r`` is ``2 pi p r^(1 - 1/p) k_max^(1/p) / (Theta * interleaves)``:
    it grows from 0 at the centre to ``edge_undersampling`` times Nyquist (1/FOV) at ``k_max = N/2``, which sets
    the total angle ``Theta``. Samples are spaced evenly along the arm, ``1 / oversampling`` apart (1/FOV
    units), like a constant-speed readout (no gradient limits are modelled).

    The centre is Nyquist-sampled out to ``r = k_max / edge_undersampling^2`` whatever the number of
    interleaves (the gap is ``edge_undersampling * sqrt(r / k_max)`` for ``p = 2``). With the defaults on a
    256 x 256 matrix and 16 interleaves the arm turns 4 times, the centre is Nyquist-sampled out to ``r = 8``
    (a 16 x 16 calibration box) and each arm has 2164 samples.

    Returns
    -------
    ndarray float32 ``(interleaves, samples, 2)`` in 1/FOV units.
    """
    grid = _check_grid(grid)
    if interleaves < 1 or edge_undersampling <= 0 or density_power < 1 or oversampling <= 0:
        raise MedinrError("a spiral needs interleaves >= 1, edge_undersampling > 0, density_power >= 1 and "
                          "oversampling > 0")
    kmax = max(grid) / 2.0
    total = 2 * np.pi * density_power * kmax / (edge_undersampling * interleaves)
    theta = np.linspace(0.0, total, 200_000)
    radius = kmax * (theta / total) ** density_power
    curve = radius * np.exp(1j * theta)
    arc = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(curve)))])
    positions = np.arange(0.0, arc[-1], 1.0 / oversampling)
    arm = np.interp(positions, arc, curve.real) + 1j * np.interp(positions, arc, curve.imag)
    arms = arm[None, :] * np.exp(2j * np.pi * np.arange(interleaves) / interleaves)[:, None]
    scale = np.asarray(grid, np.float64) / max(grid)  # an ellipse in 1/FOV units for a non-square matrix
    traj = np.stack([arms.real, arms.imag], axis=-1) * scale
    return np.clip(traj, -np.asarray(grid) / 2, np.asarray(grid) / 2 - 1e-3).astype(np.float32)


def stack_of_stars(radial: np.ndarray, partitions: int) -> np.ndarray:
    """Stack a 2D trajectory ``(R, S, 2)`` over ``partitions`` Cartesian kz positions: ``(partitions * R, S, 3)``.

    Partition ``p`` sits at ``kz = p - partitions // 2`` (1/FOV units along array axis 2); readouts are ordered
    partition by partition.
    """
    if radial.ndim != 3 or radial.shape[-1] != 2 or partitions < 1:
        raise MedinrError("stack_of_stars needs a 2D trajectory (readouts, samples, 2) and partitions >= 1")
    kz = np.arange(partitions) - partitions // 2
    planes = [np.concatenate([radial, np.full((*radial.shape[:2], 1), z, radial.dtype)], -1) for z in kz]
    return np.concatenate(planes, axis=0).astype(np.float32)


def cartesian_trajectory(grid: Sequence[int]) -> np.ndarray:
    """Every Cartesian sample of ``grid`` as a trajectory ``(N_0, N_1 * ..., d)``: one readout per index of axis 0.

    Through :class:`medinr.mri.nufft.NufftOp` it gives :func:`medinr.mri.fft.fftc` (the convention test).
    """
    grid = tuple(int(n) for n in grid)
    axes = [np.arange(n) - n // 2 for n in grid]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)
    return points.reshape(grid[0], -1, len(grid))


def radius(traj: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """Normalised k-space radius of every sample: ``sqrt(sum_a (k_a / (N_a / 2))^2)`` (1 at the edge of an axis)."""
    half = np.asarray(grid, np.float64) / 2.0
    return np.sqrt(np.sum((np.asarray(traj, np.float64) / half) ** 2, axis=-1))
