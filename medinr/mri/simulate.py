"""Simulated acquisitions from an image: smooth background phase, coil sensitivities, mask and complex noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medinr.mri.operators import SenseOp


def smooth_phase(shape: tuple[int, ...], rng: np.random.Generator, max_radians: float = np.pi / 2) -> np.ndarray:
    """A smooth random phase map (radians): a few low-frequency cosines over the field of view.

    Real images carry a slowly varying phase (B0, receive phase); this makes the simulated data complex so
    that a method cannot exploit a real-valued image.
    """
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    phase = np.zeros(shape)
    for _ in range(4):
        freq = rng.uniform(-1.5, 1.5, size=len(shape))
        offset = rng.uniform(0, 2 * np.pi)
        phase += np.cos(np.pi * sum(f * g for f, g in zip(freq, grid)) + offset)
    phase -= phase.mean()
    return (max_radians * phase / max(np.abs(phase).max(), 1e-12)).astype(np.float64)


def noise_sigma(coil_signal: np.ndarray, snr_db: float) -> float:
    """Standard deviation (per complex sample) of noise at ``snr_db``.

    SNR is the mean power of the fully sampled multi-coil signal (coil images or their k-space: the
    orthonormal FFT keeps the power) over the noise power: ``snr_db = 10 log10(mean |s|^2 / sigma^2)``.
    """
    power = float(np.mean(np.abs(coil_signal) ** 2))
    return float(np.sqrt(power / 10 ** (snr_db / 10)))


@dataclass
class Acquisition:
    """A simulated acquisition: measured (masked) k-space and the complex image it came from."""

    kspace: np.ndarray  # (C, *grid) complex64, zeros where not acquired
    image: np.ndarray  # (*grid) complex64 ground truth (with the background phase)
    noise_sigma: float


def simulate_acquisition(
    image: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    snr_db: float | None = None,
    phase: bool = True,
    seed: int = 0,
    noise_std: float | None = None,
) -> Acquisition:
    """Simulate undersampled multi-coil k-space of ``image``.

    Parameters
    ----------
    image : ndarray (*grid)
        Magnitude (or complex) image.
    maps : ndarray complex (C, *grid)
        Coil sensitivities.
    mask : ndarray bool (*grid)
    snr_db : float, optional
        Complex Gaussian noise at this SNR (see :func:`noise_sigma`); None for noise-free data.
    phase : bool
        Multiply a smooth random background phase into the image first.
    seed : int
    noise_std : float, optional
        Complex Gaussian noise of this standard deviation per complex sample, in the image's units (with the
        orthonormal FFT it is also each coil image's noise level): ``0.01 * image.max()`` is "1 % noise".
        Overrides ``snr_db``.

    Returns
    -------
    Acquisition
    """
    rng = np.random.default_rng(seed + 7919)  # decoupled from the mask draw of the same seed
    truth = np.asarray(image).astype(np.complex128)
    if phase:
        truth = truth * np.exp(1j * smooth_phase(truth.shape, rng))
    sense = SenseOp(torch.from_numpy(np.asarray(maps, np.complex128)), torch.ones(truth.shape, dtype=torch.float64))
    full = sense.coil_kspace(torch.from_numpy(truth)).numpy()  # the one SENSE model, unmasked
    sigma = 0.0
    if snr_db is not None or noise_std is not None:
        sigma = float(noise_std) if noise_std is not None else noise_sigma(full, snr_db)
        full = full + sigma / np.sqrt(2) * (rng.standard_normal(full.shape) + 1j * rng.standard_normal(full.shape))
    kspace = (full * mask).astype(np.complex64)
    return Acquisition(kspace=kspace, image=truth.astype(np.complex64), noise_sigma=sigma)
