"""INR reconstruction: an image-domain INR (complex output) fitted so that its masked k-space matches the data.

The network maps grid coordinates to (real, imaginary); its image goes through the SENSE operator and the
loss compares the acquired k-space samples, optionally with total variation on the image. No choice uses a
ground truth: the number of steps is fixed, or a few held-out acquired samples pick the iterate.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.fit import FitResult, fit
from medinr.geometry import Geometry
from medinr.models import INR, build_model
from medinr.mri.baselines import zero_filled_scale
from medinr.mri.fft import fftc
from medinr.mri.operators import SenseOp

#: Default model options per family for reconstruction (applied unless the user overrides them).
RECON_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mrgrid": {},
    "hashgrid": {"levels": 8, "features_per_level": 2, "base_resolution": 16, "hidden": 64, "layers": 2},
    "siren": {"hidden": 128, "layers": 3, "omega_0": 30.0},
}


@dataclass
class InrReconConfig:
    """Settings of an INR reconstruction.

    Attributes
    ----------
    model : str
        Zoo family (see ``medinr.models.MODEL_REGISTRY``).
    model_options : dict
        Extra options for :func:`medinr.models.build_model` (override :data:`RECON_MODEL_DEFAULTS`).
    steps : int
        Adam steps of the k-space fit.
    lr : float or None
        Base learning rate (None: the family's ``default_lr``).
    tv_weight : float
        Weight of the (smoothed, isotropic) total variation of the normalised complex image.
    data_consistency : bool
        Re-insert the acquired samples into the network's k-space for the output image.
    holdout_fraction : float
        Fraction of acquired samples (outside the calibration region) kept out of the loss; the iterate with
        the lowest held-out error is returned. 0 disables (fixed iterations).
    prior_steps : int
        Steps of the image fit to ``--prior`` before the k-space fit (NeRP).
    """

    model: str = "mrgrid"
    model_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 1200  # 256x256, 8 coils: about 50 s on 2 CPU cores (bench/recon.py)
    lr: float | None = None
    tv_weight: float = 2e-3
    data_consistency: bool = False
    holdout_fraction: float = 0.0
    prior_steps: int = 200
    schedule: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_recon_model(name: str, ndim: int, shape: tuple[int, ...], options: dict[str, Any]) -> INR:
    """A zoo model with 2 outputs (real, imaginary), with the reconstruction defaults for its family."""
    opts = dict(RECON_MODEL_DEFAULTS.get(name, {}))
    if name in ("hashgrid", "mrgrid"):
        opts.setdefault("max_resolution", int(max(shape)))
    opts.update(options)
    return build_model(name, ndim, 2, **opts)


def total_variation(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean isotropic TV of a complex image ``(*grid)``: sqrt(sum over axes of |forward difference|^2 + eps)."""
    inner = tuple(slice(0, n - 1) for n in image.shape)  # voxels that have a forward neighbour on every axis
    total = torch.zeros_like(image.real[inner])
    for axis in range(image.dim()):
        d = torch.diff(image, dim=axis)
        d = d[tuple(slice(None) if a == axis else inner[a] for a in range(image.dim()))]
        total = total + d.real**2 + d.imag**2
    return torch.sqrt(total + eps).mean()


def _param_groups(model: INR, lr: float) -> list[dict] | Any:
    groups = getattr(model, "param_groups", None)
    return groups(lr) if groups is not None else model.parameters()


def _holdout_mask(mask: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A random subset of acquired samples outside the centre box (held-out samples must not be calibration)."""
    from medinr.mri.masks import fully_sampled_center

    mask_np = mask.cpu().numpy().astype(bool)
    width = fully_sampled_center(mask_np)
    centre = np.zeros_like(mask_np)
    box = tuple(slice(n // 2 - width // 2, n // 2 - width // 2 + width) for n in mask_np.shape)
    centre[box] = True
    candidates = torch.from_numpy(mask_np & ~centre).to(mask.device)
    draw = torch.rand(mask.shape, generator=generator).to(mask.device)
    return candidates & (draw < fraction)


def fit_prior(
    model: INR, prior: torch.Tensor, coords: torch.Tensor, steps: int, lr: float, progress: bool = False
) -> FitResult:
    """Fit ``model`` to a prior image (normalised magnitude) as its real channel: NeRP's initialisation."""
    target = torch.stack([prior, torch.zeros_like(prior)], dim=-1)

    def loss_fn(step: int) -> torch.Tensor:
        return torch.mean((model(coords) - target) ** 2)

    return fit(_param_groups(model, lr), loss_fn, steps, lr=lr, progress=progress, description="prior fit")


def inr_reconstruct(
    kspace: torch.Tensor,
    maps: torch.Tensor,
    mask: torch.Tensor,
    geometry: Geometry,
    config: InrReconConfig,
    prior: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> ContinuousImage:
    """Reconstruct a complex image from undersampled multi-coil k-space with an INR.

    Parameters
    ----------
    kspace : complex tensor ``(C, *grid)``
        Acquired k-space (zeros where not acquired), any units.
    maps : complex tensor ``(C, *grid)``
        Coil sensitivities, unit RSS.
    mask : tensor ``grid``
        Acquired samples.
    geometry : Geometry
        The image grid (network coordinates come from it).
    config : InrReconConfig
    prior : ndarray ``grid``, optional
        A magnitude image of the same anatomy on the same grid (NeRP prior).
    seed : int
    progress : bool
    device : str or torch.device

    Returns
    -------
    ContinuousImage
        A complex image in the units of the k-space (the orthonormal FFT keeps them); ``extra`` holds the
        settings and choices, ``history`` the fit. :func:`reconstructed_image` turns it into the output array.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    kspace, maps = kspace.to(device), maps.to(device)
    mask = mask.to(device).bool()
    grid = tuple(geometry.shape)
    if tuple(kspace.shape[1:]) != grid or tuple(maps.shape) != tuple(kspace.shape) or tuple(mask.shape) != grid:
        raise MedinrError(
            f"k-space {tuple(kspace.shape)}, maps {tuple(maps.shape)} and mask {tuple(mask.shape)} do not match "
            f"the grid {grid}"
        )
    start = time.perf_counter()
    full_op = SenseOp(maps, mask)
    # Work in normalised units: the zero-filled image's robust maximum becomes ~1, so that learning rates and
    # the TV weight do not depend on the scanner's scaling.
    zero_filled = full_op.H(kspace * mask)
    scale = zero_filled_scale(zero_filled.abs().cpu().numpy())
    y = kspace / scale

    train = mask
    held = None
    if config.holdout_fraction > 0:
        held = _holdout_mask(mask, config.holdout_fraction, generator)
        train = mask & ~held
    y_train = y * train
    norm_train = float(torch.sum(torch.abs(y_train) ** 2)) / float(train.sum() * maps.shape[0])

    model = build_recon_model(config.model, geometry.ndim, grid, config.model_options).to(device)
    lr = float(config.lr if config.lr is not None else model.default_lr)
    coords = geometry.network_grid(device=device)

    lattice = getattr(model, "forward_lattice", None)

    def image_of(m: INR) -> torch.Tensor:
        out = lattice(grid) if lattice is not None else m(coords)
        return torch.complex(out[..., 0], out[..., 1])

    prior_result = None
    if prior is not None:
        p = torch.as_tensor(np.abs(prior), dtype=torch.float32, device=device)
        p = p / float(torch.quantile(p.flatten()[:: max(1, p.numel() // 200000)], 0.999)).__abs__()
        prior_result = fit_prior(model, p, coords, config.prior_steps, lr, progress)

    best = {"loss": float("inf"), "step": None, "state": None}
    n_coil = maps.shape[0]

    def loss_fn(step: int) -> torch.Tensor:
        x = image_of(model)
        coil_k = fftc(maps * x, geometry.ndim)  # unmasked: the held-out samples are read from it too
        resid = (coil_k - y) * train
        data = torch.sum(resid.real**2 + resid.imag**2) / (float(train.sum()) * n_coil) / norm_train
        loss = data
        if config.tv_weight > 0:
            loss = loss + config.tv_weight * total_variation(x)
        reg = model.regularization()
        if reg is not None:
            loss = loss + reg
        if held is not None:
            with torch.no_grad():
                err = float(torch.sum(torch.abs((coil_k - y) * held) ** 2))
            if err < best["loss"]:
                best.update(loss=err, step=step, state=copy.deepcopy(model.state_dict()))
        return loss

    result = fit(
        _param_groups(model, lr),
        loss_fn,
        config.steps,
        lr=lr,
        schedule=config.schedule,
        progress=progress,
        description=f"INR recon ({config.model})",
    )
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    extra: dict[str, Any] = {
        "pipeline": "reconstruct",
        "inr": config.to_dict(),
        "lr": lr,
        "best_step": best["step"],
        "seconds": time.perf_counter() - start,
    }
    if prior_result is not None:
        extra["prior_seconds"] = prior_result.seconds
    output = OutputMeaning("complex", scale=scale)
    return ContinuousImage(model, geometry, output, "network", extra=extra, history=result)


@torch.no_grad()
def reconstructed_image(
    image: ContinuousImage, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, data_consistency: bool
) -> np.ndarray:
    """The complex array of a reconstruction on its grid (input units), optionally with the samples put back.

    Where every coil sensitivity is zero (outside ESPIRiT's support) the data say nothing about the image:
    it is 0 there, the minimum-norm value SENSE and CS give, instead of the network's free extrapolation.
    """
    device = image.model.device
    values = torch.from_numpy(image.on_grid()).to(device)
    x = torch.complex(values[..., 0], values[..., 1])
    maps, kspace, mask = maps.to(device), kspace.to(device), mask.to(device).bool()
    if data_consistency:
        x = SenseOp(maps, mask).data_consistent(x, kspace)
    x = x * (maps.abs().sum(dim=0) > 0)
    return x.cpu().numpy().astype(np.complex64)
