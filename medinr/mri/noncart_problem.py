"""A non-Cartesian reconstruction problem: samples, trajectory, density compensation, coil maps, noise and truth.

The non-Cartesian counterpart of :mod:`medinr.mri.problem`. Built from an image (samples simulated along a
golden-angle radial or variable-density spiral trajectory through birdcage coils, with noise), from measured
coil images (e.g. the 2-coil GRE scan: the truth is their root-sum-of-squares), or from measured non-Cartesian
k-space (ISMRMRD, ``.npz``; no reference). Every method then runs on the same problem: the gridding image,
SigPy CS (:mod:`medinr.mri.noncart_baselines`) and the INR through :meth:`NonCartesianProblem.operator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.mri.coils import birdcage_maps
from medinr.mri.config import TRAJECTORIES
from medinr.mri.gridding import density_compensation, gridding, noncartesian_maps
from medinr.mri.noise import NoiseEstimate, estimate_noise_samples
from medinr.mri.noncart_kspace import NonCartesianKspace
from medinr.mri.nufft import NufftSenseOp
from medinr.mri.readout_holdout import NonCartesianHeldOutError, ReadoutSplit
from medinr.mri.simulate_noncart import simulate_noncartesian
from medinr.mri.trajectories import golden_angle_radial, radius, variable_density_spiral


@dataclass
class NonCartesianProblem:
    """Everything a non-Cartesian method sees, plus the reference it is judged against (if any).

    Attributes
    ----------
    samples : complex64 ``(C, readouts, samples)``
    traj : float32 ``(readouts, samples, d)`` in 1/FOV units
    dcf : float32 ``(readouts, samples)`` density compensation (:func:`medinr.mri.gridding.density_compensation`)
    maps : complex64 ``(C, *grid)`` unit RSS, used for reconstruction
    geometry : Geometry of the image grid
    noise : NoiseEstimate (noise scan, or the outer k-space shell)
    reference : float32 ``grid`` or None
    reference_kind : 'ground_truth', 'coil_rss' or 'none'
    settings : dict (for metrics.json)
    split : ReadoutSplit or None
        THE held-out split of whole readouts, drawn once (:meth:`prepared`): the INR's self-calibration and the
        CS lambdas are chosen on it.
    """

    samples: np.ndarray
    traj: np.ndarray
    dcf: np.ndarray
    maps: np.ndarray
    geometry: Geometry
    noise: NoiseEstimate
    reference: np.ndarray | None
    reference_kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    split: ReadoutSplit | None = None

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.maps.shape[1:])

    def prepared(self, holdout_fraction: float, seed: int) -> "NonCartesianProblem":
        """This problem with its held-out split of whole readouts (``holdout_fraction`` of them, from ``seed``)."""
        split = self.split
        if split is None or (split.fraction, split.seed) != (float(holdout_fraction), int(seed)):
            split = ReadoutSplit.draw(self.traj, self.grid, holdout_fraction, seed)
        return replace(self, split=split)

    def validation(self) -> NonCartesianHeldOutError:
        """The whitened error on the split's held-out readouts: what the CS lambdas are chosen by."""
        if self.split is None:
            raise MedinrError("the problem has no held-out split: call prepared() first")
        return NonCartesianHeldOutError(self.samples, self.traj, self.maps, self.split.held, self.noise.whitening())

    def operator(self, device: str | torch.device = "cpu", whitened: bool = True) -> NufftSenseOp:
        """THE forward model of this problem (whitened maps ``W S`` by default: apply to whitened samples)."""
        maps = torch.from_numpy(self.maps)
        if whitened:
            w = torch.from_numpy(self.noise.whitening())
            maps = (w @ maps.reshape(maps.shape[0], -1)).reshape(maps.shape)
        return NufftSenseOp(maps.to(device), self.traj)

    def whitened_samples(self) -> np.ndarray:
        """``W y``: the samples in noise units, for the whitened operator."""
        w = self.noise.whitening()
        return (w @ self.samples.reshape(self.samples.shape[0], -1)).reshape(self.samples.shape).astype(np.complex64)

    def gridding(self) -> np.ndarray:
        """The gridding reconstruction (complex, coil-combined with the maps): the non-Cartesian zero-filled."""
        return gridding(self.samples, self.traj, self.dcf, self.maps)


def make_trajectory(kind: str, grid: tuple[int, ...], readouts: int) -> np.ndarray:
    """``radial``: ``readouts`` golden-angle spokes (2x oversampled); ``spiral``: ``readouts`` interleaves of
    :func:`medinr.mri.trajectories.variable_density_spiral`."""
    if kind == "radial":
        return golden_angle_radial(readouts, grid)
    if kind == "spiral":
        return variable_density_spiral(readouts, grid)
    raise MedinrError(f"unknown trajectory '{kind}' ({', '.join(TRAJECTORIES)})")


def _maps_and_noise(samples: np.ndarray, traj: np.ndarray, grid: tuple[int, ...], dcf: np.ndarray, maps: str,
                    true_maps: np.ndarray | None, noise: NoiseEstimate | None) -> tuple[np.ndarray, NoiseEstimate]:
    if samples.shape[0] == 1:
        recon_maps = np.ones((1, *grid), np.complex64)
    elif maps == "simulated":
        if true_maps is None:
            raise MedinrError("--maps simulated needs an image input; measured k-space uses --maps espirit")
        recon_maps = true_maps
    elif maps == "espirit":
        recon_maps = noncartesian_maps(samples, traj, grid, dcf)
    else:
        raise MedinrError(f"unknown --maps '{maps}' (simulated, espirit)")
    if noise is None:
        noise = estimate_noise_samples(samples, radius(traj, grid))
    return recon_maps, noise


def noncart_problem_from_image(image: np.ndarray, geometry: Geometry, trajectory: str = "radial",
                               readouts: int = 48, coils: int = 8, maps: str = "espirit",
                               snr_db: float | None = 30.0, phase: bool = True, density: str = "voronoi",
                               seed: int = 0) -> NonCartesianProblem:
    """Simulate a non-Cartesian multi-coil acquisition of ``image`` (magnitude, input units), birdcage coils."""
    truth = np.abs(np.asarray(image)).astype(np.float32)
    if not np.all(np.isfinite(truth)) or not truth.max() > 0:
        raise MedinrError("the image is zero or not finite")
    grid = truth.shape
    traj = make_trajectory(trajectory, grid, readouts)
    true_maps = birdcage_maps(grid, coils)
    acq = simulate_noncartesian(truth, traj, true_maps, snr_db, phase, seed)
    dcf = density_compensation(traj, grid, density)
    recon_maps, noise = _maps_and_noise(acq.samples, traj, grid, dcf, maps, true_maps, None)
    settings = {"source": "simulated from image", "trajectory": trajectory, "readouts": readouts, "coils": coils,
                "maps": maps if coils > 1 else "single coil", "snr_db": snr_db, "noise_sigma": acq.noise_sigma,
                "background_phase": phase, "density_compensation": density, "noise": noise.to_dict()}
    return NonCartesianProblem(acq.samples, traj, dcf, recon_maps, geometry, noise, truth, "ground_truth", settings)


def noncart_problem_from_coil_images(coil_images: np.ndarray, geometry: Geometry, trajectory: str = "radial",
                                     readouts: int = 48, snr_db: float | None = None, density: str = "voronoi",
                                     seed: int = 0) -> NonCartesianProblem:
    """Sample measured coil images (e.g. of a fully sampled Cartesian scan) along a trajectory.

    The reference is their root-sum-of-squares; maps are estimated (ESPIRiT on the gridded centre), as on a
    scanner. ``snr_db`` adds noise on top of the scan's own.
    """
    coil_images = np.asarray(coil_images, np.complex64)
    grid = coil_images.shape[1:]
    traj = make_trajectory(trajectory, grid, readouts)
    acq = simulate_noncartesian(coil_images, traj, None, snr_db, seed=seed)
    dcf = density_compensation(traj, grid, density)
    recon_maps, noise = _maps_and_noise(acq.samples, traj, grid, dcf, "espirit", None, None)
    reference = np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=0)).astype(np.float32)
    settings = {"source": "measured coil images", "trajectory": trajectory, "readouts": readouts,
                "coils": int(coil_images.shape[0]), "maps": "espirit", "added_snr_db": snr_db,
                "density_compensation": density, "noise": noise.to_dict()}
    return NonCartesianProblem(acq.samples, traj, dcf, recon_maps, geometry, noise, reference, "coil_rss", settings)


def noncart_problem_from_measured(measured: NonCartesianKspace, maps: str = "espirit",
                                  density: str = "voronoi") -> NonCartesianProblem:
    """A problem from measured non-Cartesian k-space (no reference: judged on held-out readouts).

    The noise covariance comes from the file's noise-adjustment scan when it has one, else from the outer
    k-space shell.
    """
    if measured.traj.shape[-1] != len(measured.matrix):
        raise MedinrError(f"{measured.source}: a {measured.traj.shape[-1]}D trajectory for a "
                          f"{len(measured.matrix)}D matrix")
    dcf = density_compensation(measured.traj, measured.matrix, density)
    noise = measured.noise_estimate()
    recon_maps, noise = _maps_and_noise(measured.samples, measured.traj, measured.matrix, dcf, maps, None, noise)
    settings = {"source": f"measured k-space {measured.source}", "maps": maps, "density_compensation": density,
                "noise": noise.to_dict(), "kspace": measured.describe(), "trajectory_units": measured.units}
    return NonCartesianProblem(measured.samples, measured.traj, dcf, recon_maps, measured.geometry, noise, None,
                               "none", settings)
