"""A reconstruction problem: measured (or simulated) k-space, mask, coil maps, grid and, when known, the truth.

Built either from an image (k-space simulated through coil maps, a mask and noise) or from measured k-space
(undersampled retrospectively when it is fully sampled). Every method is then run on the same problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.mri.coils import birdcage_maps, calibration_box, espirit_maps
from medinr.mri.fft import ifftc
from medinr.mri.holdout import KspaceSplit
from medinr.mri.kspace_io import MeasuredKspace
from medinr.mri.masks import SamplingMask, make_mask, validate_mask
from medinr.mri.measured import acquired_box
from medinr.mri.noise import NoiseEstimate, estimate_noise
from medinr.mri.operators import SenseOp
from medinr.mri.simulate import simulate_acquisition


@dataclass
class ReconProblem:
    """Everything a reconstruction method sees, plus the reference it is judged against (if any).

    Attributes
    ----------
    kspace : complex64 ``(C, *grid)``, zeros where not acquired
    mask : SamplingMask
    maps : complex64 ``(C, *grid)`` used for reconstruction (unit RSS)
    geometry : Geometry of the image grid
    reference : float32 ``grid`` or None
        Magnitude ground truth (simulation) or fully sampled reference (retrospective undersampling).
    reference_kind : str
        'ground_truth', 'fully_sampled_rss' or 'none'.
    settings : dict
        How the problem was made (for metrics.json).
    noise : NoiseEstimate or None
        The coil noise covariance, estimated once (:meth:`prepared`) and used by every method.
    split : KspaceSplit or None
        THE held-out split, drawn once (:meth:`prepared`): the INR's self-calibration and the CS lambdas are
        chosen on it.
    """

    kspace: np.ndarray
    mask: SamplingMask
    maps: np.ndarray
    geometry: Geometry
    reference: np.ndarray | None
    reference_kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    noise: NoiseEstimate | None = None
    split: KspaceSplit | None = None

    def prepared(self, holdout_fraction: float, seed: int) -> "ReconProblem":
        """This problem with its noise estimate and its held-out split (``holdout_fraction`` of the acquired
        readouts outside the calibration region, drawn from ``seed``), each computed once here."""
        noise = self.noise if self.noise is not None else estimate_noise(self.kspace, self.mask.mask)
        split = self.split
        if split is None or (split.fraction, split.seed) != (float(holdout_fraction), int(seed)):
            split = KspaceSplit.draw(self.mask.mask, holdout_fraction, seed)
        return replace(self, noise=noise, split=split)

    def tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k-space, maps and mask as tensors on ``device``."""
        return (
            torch.from_numpy(self.kspace).to(device),
            torch.from_numpy(self.maps).to(device),
            torch.from_numpy(self.mask.mask).to(device),
        )


#: What to do when ESPIRiT cannot calibrate, by where the k-space came from (advice that works for that input).
ESPIRIT_ADVICE = {
    "simulated": "raise --center-fraction, or use --maps simulated",
    "retrospective": "raise --center-fraction: the retrospective mask then keeps more centre lines",
    "measured": "the file's own sampling has too small a calibration region to estimate coil maps; medinr cannot "
                "reconstruct these multi-coil data without them (acquire more centre lines)",
}


def _maps_for(kind: str, kspace: np.ndarray, mask: np.ndarray, simulated: np.ndarray | None,
              source: str = "simulated") -> np.ndarray:
    if kspace.shape[0] == 1:
        return np.ones_like(kspace, dtype=np.complex64)
    if kind == "simulated":
        if simulated is None:
            raise MedinrError("--maps simulated needs an image input; measured k-space uses --maps espirit")
        return simulated
    if kind == "espirit":
        return espirit_maps(kspace, calibration_box(mask), advice=ESPIRIT_ADVICE[source])
    raise MedinrError(f"unknown --maps '{kind}' (simulated, espirit)")


def problem_from_image(
    image: np.ndarray,
    geometry: Geometry,
    mask_kind: str = "random",
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    coils: int = 8,
    maps: str = "simulated",
    snr_db: float | None = None,
    phase: bool = True,
    seed: int = 0,
    noise_fraction: float | None = None,
) -> ReconProblem:
    """Simulate an undersampled multi-coil acquisition of ``image`` (magnitude, input units).

    The coil maps are birdcage maps; ``maps='espirit'`` re-estimates them from the simulated calibration
    region (as on a scanner) instead of using the true ones. Noise is set either by ``snr_db`` or by
    ``noise_fraction``: complex noise whose standard deviation per sample is that fraction of the image's
    maximum ("1 % noise" is 0.01; with the orthonormal FFT it is each coil image's noise level).
    """
    if not np.all(np.isfinite(image)):
        raise MedinrError("the image contains NaN or infinite values")
    truth = np.abs(image).astype(np.float32)
    if truth.max() <= 0:
        raise MedinrError("the image is entirely zero")
    mask = make_mask(truth.shape, mask_kind, acceleration, center_fraction, seed)
    true_maps = birdcage_maps(truth.shape, coils)
    std = None if noise_fraction is None else float(noise_fraction) * float(truth.max())
    acq = simulate_acquisition(truth, true_maps, mask.mask, snr_db=snr_db, phase=phase, seed=seed, noise_std=std)
    recon_maps = _maps_for(maps, acq.kspace, mask.mask, true_maps)
    settings = {
        "source": "simulated from image",
        "coils": coils,
        "maps": maps if coils > 1 else "single coil",
        "snr_db": snr_db,
        "noise_fraction": noise_fraction,
        "noise_sigma": acq.noise_sigma,
        "background_phase": phase,
        "mask": mask.to_dict(),
    }
    return ReconProblem(acq.kspace, mask, recon_maps, geometry, truth, "ground_truth", settings)


def problem_from_kspace(
    measured: MeasuredKspace,
    mask_kind: str | None = None,
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    maps: str = "espirit",
    seed: int = 0,
) -> ReconProblem:
    """A problem from measured k-space.

    If the data are undersampled (a stored mask, or zero lines) they are used as they are. If they are fully
    sampled, ``mask_kind`` (default 'random') undersamples them retrospectively and the root-sum-of-squares of
    the full data becomes the reference. Fully sampled includes a scan whose acquired samples fill a box of the
    grid (zero-padded edges, partial Fourier: :func:`medinr.mri.measured.acquired_box`); the mask then keeps
    nothing outside the box. A mask file (``mask_kind`` a path) always applies.
    """
    if not isinstance(measured, MeasuredKspace):
        raise MedinrError(f"{measured.source} holds non-Cartesian k-space, which needs the non-uniform SENSE "
                          "reconstruction (medinr.mri.noncart_problem), not a Cartesian mask")
    kspace = measured.kspace
    grid = tuple(kspace.shape[1:])
    stored = measured.acquired()
    if not stored.any():
        raise MedinrError(f"{measured.source} holds no acquired samples (all zeros)")
    box = acquired_box(stored)
    fully_sampled = box is not None
    reference, reference_kind = None, "none"
    if fully_sampled or (mask_kind is not None and mask_kind not in ("random", "equispaced", "poisson")):
        kind = mask_kind or "random"
        mask = make_mask(grid, kind, acceleration, center_fraction, seed)
        if fully_sampled:
            coil_images = ifftc(torch.from_numpy(kspace), len(grid)).numpy()
            reference = np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=0)).astype(np.float32)
            reference_kind = "fully_sampled_rss"
        mask.mask &= stored
        if not mask.mask.any():
            raise MedinrError("the mask samples nothing that was acquired")
    else:
        if mask_kind is not None:
            raise MedinrError(
                f"{measured.source} is already undersampled; --mask {mask_kind} can only undersample fully sampled data"
            )
        mask = SamplingMask(validate_mask(stored, grid), "measured", None, 0.0, seed)
    undersampled = (kspace * mask.mask).astype(np.complex64)
    recon_maps = _maps_for(maps, undersampled, mask.mask, None, "retrospective" if fully_sampled else "measured")
    settings = {
        "source": f"measured k-space {measured.source}",
        "coils": int(kspace.shape[0]),
        "maps": maps if kspace.shape[0] > 1 else "single coil",
        "retrospective_undersampling": fully_sampled,
        **({"acquired_box": [[b.start, b.stop] for b in box]} if box is not None and not stored.all() else {}),
        "mask": mask.to_dict(),
        **({"file": measured.meta} if measured.meta else {}),
    }
    return ReconProblem(undersampled, mask, recon_maps, measured.geometry, reference, reference_kind, settings)


def kspace_relative_error(problem: ReconProblem, image: np.ndarray) -> float:
    """``||A x - y|| / ||y||`` over the acquired samples: data consistency of a complex image ``x``."""
    kspace, maps, mask = problem.tensors()
    pred = SenseOp(maps, mask)(torch.from_numpy(np.asarray(image, np.complex64)))
    measured = kspace * mask
    return float(torch.linalg.vector_norm(pred - measured) / torch.linalg.vector_norm(measured))
