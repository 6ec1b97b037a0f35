"""INR reconstruction of non-Cartesian k-space: the Cartesian fit (:mod:`medinr.mri.inr_recon`) through the
non-uniform SENSE model.

The unknown is the same continuous image (an INR of complex output on the encoded matrix), fitted by the same
loss, path, priors, presets, validator and final stage; only the forward model differs. Its samples are the
trajectory's (:class:`medinr.mri.nufft.NufftSenseOp`, every readout in one NUFFT), and the split holds out
whole readouts (:class:`medinr.mri.readout_holdout.ReadoutSplit`): the loss weighs the fitting readouts'
samples, the held-out error (:class:`medinr.training.HeldOutSamples`) reads the held-out readouts' samples of
the same residual, so a validation costs no extra NUFFT. There is no grid to zero-fill: the image is evaluated
on the lattice and sampled where the scanner sampled. The data term weighs each whitened sample by its density
compensation (normalised to mean 1, :data:`DENSITY_POWER`): radial and spiral readouts crowd the centre, and
unweighted the fit spends its first steps on the low frequencies alone (a preconditioner, as in NIK). The
held-out error stays unweighted (the whitened maximum-likelihood one CS's lambda is chosen by), so the choice
of step is not tied to the weighting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.mri.baselines import zero_filled_scale
from medinr.mri.config import InrReconConfig
from medinr.mri.inr_recon import WhitenedData, fit_whitened, reconstruction_image
from medinr.mri.noncart_problem import NonCartesianProblem
from medinr.mri.nufft import NufftSenseOp
from medinr.mri.operators import coil_mix


@dataclass
class WhitenedSamples(WhitenedData):
    """Whitened non-Cartesian samples ``(C, readouts, samples)`` and whitened, scaled maps: the operator of every
    objective is the NUFFT SENSE model on the whole trajectory (built once); masks over ``(readouts, samples)``
    choose which of its samples a loss or a validation reads."""

    traj: np.ndarray = field(default=None, repr=False)
    _op: NufftSenseOp | None = field(default=None, repr=False)

    def op(self, mask: torch.Tensor) -> NufftSenseOp:
        if self._op is None:
            self._op = NufftSenseOp(self.maps, self.traj)
        return self._op


#: Power of the density compensation that weighs the data term's samples (0: unweighted).
DENSITY_POWER = 1.0


def whiten_samples(problem: NonCartesianProblem, whiten: bool, device: torch.device) -> WhitenedSamples:
    """``W y`` and ``W S scale``, ``scale`` the robust maximum of the gridding image (the unit CS uses too)."""
    scale = zero_filled_scale(np.abs(problem.gridding()))
    noise = problem.noise
    w = torch.from_numpy(noise.whitening() if whiten else np.eye(len(noise.covariance), dtype=np.complex64)
                         / noise.sigma).to(device)
    samples = torch.from_numpy(np.asarray(problem.samples, np.complex64)).to(device)
    maps = torch.from_numpy(np.asarray(problem.maps, np.complex64)).to(device)
    weights = None
    if DENSITY_POWER > 0:
        dcf = np.asarray(problem.dcf, np.float64) ** DENSITY_POWER
        weights = torch.from_numpy((dcf / dcf.mean()).astype(np.float32)).to(device)
    return WhitenedSamples(coil_mix(w, samples), coil_mix(w, maps) * scale, scale, noise, whiten, weights,
                           traj=problem.traj)


def noncart_inr_reconstruct(
    problem: NonCartesianProblem,
    config: InrReconConfig,
    prior: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> ContinuousImage:
    """Reconstruct a complex image from non-Cartesian multi-coil samples with a self-calibrated INR.

    Parameters are those of :func:`medinr.mri.inr_recon.inr_reconstruct`; the problem's held-out split (whole
    readouts) is drawn here from ``config.holdout_fraction`` and ``seed`` when it has none.

    Returns
    -------
    ContinuousImage
        A complex image in the units of the samples; ``extra`` holds the settings, the noise estimate, the
        split, the validation curve and every choice; ``history`` the fit, each stage timed.
    """
    if config.data_consistency:
        raise MedinrError("--data-consistency needs Cartesian k-space (non-Cartesian samples have no grid to be "
                          "put back on)")
    if problem.split is None:
        problem = problem.prepared(config.holdout_fraction if config.holdout_fraction > 0 else 0.1, seed)
    device = torch.device(device)
    data = whiten_samples(problem, config.whiten, device)
    per_readout = problem.samples.shape[-1]
    mask = torch.ones(problem.samples.shape[1:], dtype=torch.bool, device=device)
    held = torch.from_numpy(problem.split.samples("held", per_readout)).to(device)
    model, info, history = fit_whitened(data, mask, held, problem.geometry, config, prior, seed, progress, device)
    return reconstruction_image(model, data, problem, config, info, history)


@torch.no_grad()
def noncart_image(image: ContinuousImage, maps: np.ndarray) -> np.ndarray:
    """The complex array of a reconstruction on its grid (input units); 0 where every coil sensitivity is zero
    (as :func:`medinr.mri.inr_recon.reconstructed_image`)."""
    values = image.on_grid()
    x = values[..., 0] + 1j * values[..., 1]
    return (x * (np.abs(maps).sum(axis=0) > 0)).astype(np.complex64)
