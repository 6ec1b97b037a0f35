"""Simulated non-Cartesian acquisitions: an image (or measured coil images) sampled along a trajectory, with noise.

The non-Cartesian counterpart of :mod:`medinr.mri.simulate`: the same smooth background phase and the same SNR
definition (mean power of the fully sampled coil images over the noise power per complex sample), so a
non-Cartesian case at a given SNR has the noise level of a Cartesian one. The samples go through THE
non-uniform SENSE model (:class:`medinr.mri.nufft.NufftSenseOp`), exactly as the reconstruction models them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.mri.nufft import NufftOp
from medinr.mri.simulate import noise_sigma, smooth_phase


@dataclass
class NonCartesianAcquisition:
    """Simulated samples ``(C, readouts, samples)`` complex64, the complex truth (``grid``) and the noise level."""

    samples: np.ndarray
    image: np.ndarray | None  # the complex image (with background phase); None when coil images were given
    noise_sigma: float


def simulate_noncartesian(
    image: np.ndarray,
    traj: np.ndarray,
    maps: np.ndarray | None = None,
    snr_db: float | None = None,
    phase: bool = True,
    seed: int = 0,
) -> NonCartesianAcquisition:
    """Sample ``image`` along ``traj`` through coil sensitivities and add complex Gaussian noise.

    Parameters
    ----------
    image : ndarray
        A magnitude or complex image ``grid`` (with ``maps``), or complex coil images ``(C, *grid)`` (e.g. the
        measured coil images of a fully sampled Cartesian scan; ``maps`` None, no phase is added).
    traj : ndarray ``(readouts, samples, d)``
        Trajectory in 1/FOV units (:mod:`medinr.mri.trajectories`).
    maps : complex ndarray ``(C, *grid)``, optional
        Coil sensitivities (e.g. :func:`medinr.mri.coils.birdcage_maps`).
    snr_db : float, optional
        Noise at this SNR (:func:`medinr.mri.simulate.noise_sigma` of the coil images); None: noise-free.
    phase : bool
        Multiply a smooth random background phase into ``image`` first (with maps only).
    seed : int

    Returns
    -------
    NonCartesianAcquisition
    """
    rng = np.random.default_rng(seed + 7919)  # the same offset as the Cartesian simulation
    image = np.asarray(image)
    if not np.all(np.isfinite(image)):
        raise MedinrError("the image contains NaN or infinite values")
    truth = None
    if maps is None:
        if image.ndim != np.asarray(traj).shape[-1] + 1:
            raise MedinrError("without coil maps the image must be coil images (coils, *grid)")
        coil_images = image.astype(np.complex128)
    else:
        truth = image.astype(np.complex128)
        if phase:
            truth = truth * np.exp(1j * smooth_phase(truth.shape, rng))
        coil_images = np.asarray(maps, np.complex128) * truth
    grid = coil_images.shape[1:]
    op = NufftOp(traj, grid, coil_images.shape[0])
    samples = op(torch.from_numpy(coil_images)).numpy()
    sigma = 0.0
    if snr_db is not None:
        sigma = noise_sigma(coil_images, snr_db)
        noise = rng.standard_normal(samples.shape) + 1j * rng.standard_normal(samples.shape)
        samples = samples + sigma / np.sqrt(2) * noise
    return NonCartesianAcquisition(samples.astype(np.complex64),
                                   None if truth is None else truth.astype(np.complex64), sigma)
