"""INR reconstruction: an image-domain INR (complex output) fitted to the acquired k-space through SENSE,
self-calibrated.

The network maps grid coordinates to (real, imaginary); its image goes through the whitened SENSE operator
(:class:`medinr.mri.operators.SenseOp` on noise-whitened data, :mod:`medinr.mri.noise`) and the loss is the
residual energy on the fitting samples plus total variation and L1-wavelet priors on the image. What used to
be fixed is chosen per scan from held-out acquired samples (:mod:`medinr.mri.selfcal`): the weights along a
regularisation path, the grid levels unlocked (coarse to fine) and the stopping step; the model is then
refitted on every sample with the chosen settings. No choice uses a ground truth.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.fit import FitResult, fit, lr_lambda
from medinr.geometry import Geometry
from medinr.models import INR, build_model, task_defaults
from medinr.mri.baselines import zero_filled_scale
from medinr.mri.holdout import describe_split, holdout_split, validation_error
from medinr.mri.noise import NoiseEstimate, estimate_noise
from medinr.mri.operators import SenseOp
from medinr.mri.priors import total_variation, wavelet_l1
from medinr.mri.selfcal import RegularisationPath, ValidationCurve


@dataclass
class InrReconConfig:
    """Settings of an INR reconstruction.

    Attributes
    ----------
    model : str
        Zoo family (see ``medinr.models.MODEL_REGISTRY``).
    model_options : dict
        Extra options for :func:`medinr.models.build_model` (over the family's reconstruction defaults,
        :func:`medinr.models.tasks.task_defaults`).
    path : RegularisationPath
        Steps, the TV and wavelet weights from start to end, and the coarse-to-fine schedule.
    lr : float or None
        Base learning rate (None: the family's rate for reconstruction).
    holdout_fraction : float
        Fraction of acquired units (readouts, outside the calibration region) held out to choose the point
        on the path. 0 disables self-calibration: the whole path is walked on every sample.
    final : {'refit', 'finetune', 'split'}
        After the choice: refit on every acquired sample from the start up to the chosen step; or continue
        the split's chosen model on every sample for ``finetune_fraction`` of the chosen step; or keep the
        split's model.
    finetune_fraction : float
    whiten : bool
        Decorrelate the coils with the estimated noise covariance (else only divide by the noise level).
    eval_every : int
        Steps between two held-out evaluations.
    warmup_fraction : float
        No point of the first ``warmup_fraction`` of the nominal path is a candidate: an untrained network
        is not a reconstruction, yet it can predict a few noise-dominated held-out lines best.
    patience : int
        Evaluations without improvement before the walk stops early.
    data_consistency : bool
        Re-insert the acquired samples into the network's k-space for the output image.
    prior_steps : int
        Steps of the image fit to ``--prior`` before the k-space fit (NeRP).
    schedule : str
        Learning-rate schedule over the path.
    """

    model: str = "mrgrid"
    model_options: dict[str, Any] = field(default_factory=dict)
    path: RegularisationPath = field(default_factory=RegularisationPath)
    lr: float | None = None
    holdout_fraction: float = 0.1
    final: str = "refit"
    finetune_fraction: float = 0.25
    whiten: bool = True
    eval_every: int = 10
    warmup_fraction: float = 0.2
    patience: int = 8
    data_consistency: bool = False
    prior_steps: int = 200
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        if isinstance(self.path, dict):
            self.path = RegularisationPath(**self.path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Presets of ``medinr reconstruct --preset``: overrides of :class:`InrReconConfig` (``path`` entries
#: override :class:`RegularisationPath` fields). Chosen on the benchmark panel (bench/recon.py).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"path": {"steps": 100}, "eval_every": 5, "patience": 6, "final": "finetune"},
    "default": {},
    "quality": {"path": {"steps": 600}, "patience": 12},
}


def preset_config(name: str, **overrides: Any) -> InrReconConfig:
    """An :class:`InrReconConfig` for preset ``name`` ('fast', 'default', 'quality') with ``overrides``."""
    if name not in PRESETS:
        raise MedinrError(f"unknown preset '{name}' ({', '.join(PRESETS)})")
    settings = copy.deepcopy(PRESETS[name])
    path = {**settings.pop("path", {}), **overrides.pop("path", {})}
    config = InrReconConfig(**{**settings, **overrides})
    for key, value in path.items():
        setattr(config.path, key, value)
    return config


def build_recon_model(name: str, ndim: int, shape: tuple[int, ...], options: dict[str, Any]) -> INR:
    """A zoo model with 2 outputs (real, imaginary), with the reconstruction defaults for its family."""
    return build_model(name, ndim, 2, **task_defaults(name, "reconstruction", tuple(shape), options).options)


def model_levels(model: INR) -> int:
    """Grid levels a coarse-to-fine schedule can unlock (mrgrid's dense levels; 1 for other families)."""
    return len(model.grids) if model.family == "mrgrid" else 1


def lattice_image(model: INR, shape: tuple[int, ...], active: int | None = None) -> torch.Tensor:
    """The complex image of ``model`` on the lattice of ``shape``, differentiable.

    For mrgrid the levels beyond the ``active`` coarsest ones are switched off (coarse-to-fine), and the
    decoder runs channel-first on the upsampled features (the same numbers as ``model.forward_lattice``
    with all levels active, without its channel-last copies); other families use ``forward_lattice``.
    """
    if model.family != "mrgrid":
        out = model.forward_lattice(shape)
        return torch.complex(out[..., 0], out[..., 1])
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    feats = []
    for level, grid in enumerate(model.grids):
        up = F.interpolate(grid[None], size=tuple(shape), mode=mode, align_corners=True)[0]
        feats.append(up if active is None or level < active else torch.zeros_like(up))
    h = torch.cat(feats, dim=0).reshape(len(feats) * feats[0].shape[0], -1)  # (features, voxels)
    for layer in model.mlp:
        h = torch.relu(h) if isinstance(layer, torch.nn.ReLU) else layer.weight @ h + layer.bias[:, None]
    return torch.complex(h[0], h[1]).reshape(shape)


@dataclass
class WhitenedData:
    """The scan in the units the fit works in: whitened k-space (unit noise) and whitened maps for the image
    normalised to a robust maximum of 1 (``image = scale * x``)."""

    kspace: torch.Tensor
    maps: torch.Tensor
    scale: float
    noise: NoiseEstimate
    whitened: bool

    def op(self, mask: torch.Tensor) -> SenseOp:
        return SenseOp(self.maps, mask)


def whiten_data(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, whiten: bool) -> WhitenedData:
    """Normalise and whiten: ``W y`` and ``W S scale`` so that ``SenseOp(W S scale) x`` predicts ``W y``."""
    scale = zero_filled_scale(SenseOp(maps, mask).H(kspace * mask).abs().cpu().numpy())
    noise = estimate_noise(kspace.cpu().numpy(), mask.cpu().numpy())
    if whiten:
        w = torch.from_numpy(noise.whitening()).to(kspace.device)
    else:
        w = torch.eye(kspace.shape[0], dtype=torch.complex64, device=kspace.device) / noise.sigma
    mix = lambda a: (w.to(a.dtype) @ a.reshape(a.shape[0], -1)).reshape(a.shape)  # noqa: E731
    return WhitenedData(mix(kspace * mask), mix(maps) * scale, scale, noise, whiten)


@dataclass
class PathWalk:
    """One walk along the path: the chosen model state, the validation curve and the fit history."""

    state: dict[str, torch.Tensor] | None
    curve: ValidationCurve
    history: FitResult
    steps: int


def walk_path(
    model: INR,
    data: WhitenedData,
    fit_mask: torch.Tensor,
    held_mask: torch.Tensor | None,
    config: InrReconConfig,
    stop_at: int | None = None,
    first: int = 0,
) -> PathWalk:
    """Adam along ``config.path`` on the ``fit_mask`` samples; score ``held_mask`` every ``eval_every`` steps.

    With held-out samples the walk stops when the validation curve is exhausted and returns the best state;
    without, it runs to ``stop_at`` (or the nominal end of the path) and returns the last state. ``first``
    starts the walk at that point of the path (weights, levels and learning rate of that step).
    """
    path, grid, levels = config.path, tuple(data.maps.shape[1:]), model_levels(model)
    warmup = int(config.warmup_fraction * path.steps)
    lr = float(config.lr if config.lr is not None else model.for_task("reconstruction", grid).lr)
    optimiser = torch.optim.Adam(model.param_groups(lr))
    factor = lr_lambda(config.schedule, path.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: factor(step + first))
    fit_w, n_vox = fit_mask.to(data.maps.real.dtype), float(np.prod(grid))
    op, curve, history = data.op(fit_mask), ValidationCurve(config.patience), FitResult()
    state, start = None, time.perf_counter()
    last = stop_at if stop_at is not None else (path.max_steps if held_mask is not None else path.steps)
    for step in range(first, last):
        optimiser.zero_grad(set_to_none=True)
        x = lattice_image(model, grid, path.active_levels(step, levels))
        resid = op.coil_kspace(x) - data.kspace
        loss = torch.sum((resid.real**2 + resid.imag**2) * fit_w) / n_vox
        loss = loss + path.tv(step) * total_variation(x) + _wavelet_term(path.wavelet(step), x)
        reg = model.regularization()  # the family's own penalty (e.g. a KAN's L1), if any
        if reg is not None:
            loss = loss + reg
        if held_mask is not None and step % config.eval_every == 0 and step >= warmup:
            err = float(validation_error(resid.detach(), held_mask))
            if curve.add(path.at(step, levels), err, float(loss.detach())):
                state = copy.deepcopy(model.state_dict())
            if curve.exhausted():
                break
        if not torch.isfinite(loss):
            raise MedinrError(f"the fit diverged at step {step}; try a lower --lr")
        loss.backward()
        optimiser.step()
        scheduler.step()
        history.losses.append(float(loss.detach()))
    history.steps, history.seconds = len(history.losses), time.perf_counter() - start
    return PathWalk(state, curve, history, history.steps)


def _wavelet_term(weight: float, x: torch.Tensor) -> torch.Tensor | float:
    return weight * wavelet_l1(x) if weight > 0 else 0.0


def fit_prior(
    model: INR, prior: torch.Tensor, coords: torch.Tensor, steps: int, lr: float, progress: bool = False
) -> FitResult:
    """Fit ``model`` to a prior image (normalised magnitude) as its real channel: NeRP's initialisation."""
    target = torch.stack([prior, torch.zeros_like(prior)], dim=-1)

    def loss_fn(step: int) -> torch.Tensor:
        return torch.mean((model(coords) - target) ** 2)

    return fit(model.param_groups(lr), loss_fn, steps, lr=lr, progress=progress, description="prior fit")


def _check_shapes(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, grid: tuple[int, ...]) -> None:
    if tuple(kspace.shape[1:]) != grid or tuple(maps.shape) != tuple(kspace.shape) or tuple(mask.shape) != grid:
        raise MedinrError(
            f"k-space {tuple(kspace.shape)}, maps {tuple(maps.shape)} and mask {tuple(mask.shape)} do not match "
            f"the grid {grid}"
        )


def _initial_model(config: InrReconConfig, geometry: Geometry, prior: np.ndarray | None, seed: int,
                   device: torch.device) -> tuple[INR, dict[str, Any]]:
    """The model every walk starts from (seeded; fitted to the prior first when one is given)."""
    torch.manual_seed(seed)
    model = build_recon_model(config.model, geometry.ndim, tuple(geometry.shape), config.model_options).to(device)
    info: dict[str, Any] = {}
    if prior is not None:
        p = torch.as_tensor(np.abs(prior), dtype=torch.float32, device=device)
        p = p / max(float(torch.quantile(p.flatten()[:: max(1, p.numel() // 200000)], 0.999)), 1e-12)
        lr = float(config.lr if config.lr is not None else model.for_task("reconstruction", geometry.shape).lr)
        grid = geometry.network_grid(device=device)
        info["prior_seconds"] = fit_prior(model, p, grid, config.prior_steps, lr).seconds
    return model, info


def self_calibrate(
    start: INR, data: WhitenedData, mask: torch.Tensor, config: InrReconConfig, seed: int
) -> tuple[INR, dict[str, Any], FitResult]:
    """Walk the path on a split, choose the point with the lowest held-out error, then refit on every sample."""
    mask_np = mask.cpu().numpy()
    fit_np, held_np = holdout_split(mask_np, config.holdout_fraction, seed)
    model = copy.deepcopy(start)
    if not held_np.any():  # nothing outside the calibration region: walk the whole path
        walk = walk_path(model, data, mask, None, config)
        return model, {"self_calibration": "no samples to hold out: whole path walked"}, walk.history
    held = torch.from_numpy(held_np).to(mask.device)
    walk = walk_path(model, data, torch.from_numpy(fit_np).to(mask.device), held, config)
    chosen = walk.curve.points[walk.curve.best]
    info = {
        "split": {**describe_split(mask_np, held_np), "fraction": config.holdout_fraction, "seed": seed},
        "validation_curve": walk.curve.points,
        "chosen": chosen,
        "walk_steps": walk.steps,
    }
    if config.final not in ("refit", "finetune", "split"):
        raise MedinrError(f"unknown final step '{config.final}' (refit, finetune, split)")
    step = max(1, int(chosen["step"]))
    if config.final == "split":
        model.load_state_dict(walk.state)
        return model, {**info, "final": "model of the split at the chosen step"}, walk.history
    if config.final == "finetune":
        model.load_state_dict(walk.state)
        extra = max(1, int(round(config.finetune_fraction * step)))
        final = walk_path(model, data, mask, None, config, stop_at=step + extra, first=step)
        info["final"] = f"the split's model continued on every acquired sample for {extra} steps"
    else:
        model = copy.deepcopy(start)
        final = walk_path(model, data, mask, None, config, stop_at=step)
        info["final"] = f"refitted on every acquired sample up to step {step}"
    final.history.losses = walk.history.losses + final.history.losses
    final.history.seconds += walk.history.seconds
    return model, info, final.history


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
    """Reconstruct a complex image from undersampled multi-coil k-space with a self-calibrated INR.

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
        Seeds the model and the held-out split: the same seed gives the same choices.
    progress : bool
        Unused (kept for the callers); the walk is short and reports through ``extra``.
    device : str or torch.device

    Returns
    -------
    ContinuousImage
        A complex image in the units of the k-space (the orthonormal FFT keeps them); ``extra`` holds the
        noise estimate, the split, the validation curve and every choice; ``history`` the fit.
    """
    device = torch.device(device)
    kspace, maps, mask = kspace.to(device), maps.to(device), mask.to(device).bool()
    _check_shapes(kspace, maps, mask, tuple(geometry.shape))
    start_time = time.perf_counter()
    data = whiten_data(kspace, maps, mask, config.whiten)
    start, prior_info = _initial_model(config, geometry, prior, seed, device)
    if config.holdout_fraction > 0:
        model, info, history = self_calibrate(start, data, mask, config, seed)
    else:
        model = start
        history = walk_path(model, data, mask, None, config).history
        info = {"self_calibration": "off: whole path walked on every sample"}
    model.eval()
    extra: dict[str, Any] = {
        "pipeline": "reconstruct",
        "inr": config.to_dict(),
        "noise": {**data.noise.to_dict(), "whitened": data.whitened},
        **info,
        **prior_info,
        "seconds": time.perf_counter() - start_time,
    }
    output = OutputMeaning("complex", scale=data.scale)
    return ContinuousImage(model, geometry, output, "network", extra=extra, history=history)


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
