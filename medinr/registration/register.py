"""The optimisation: fit the INR displacement so that moving(x + u(x)) matches fixed(x), coarse to fine."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.fit import fit, seed_everything
from medinr.geometry import Geometry
from medinr.models import build_model
from medinr.registration.losses import LOSSES, similarity
from medinr.registration.regularizers import regularisation
from medinr.registration.transform import Warper


@dataclass
class RegistrationSettings:
    """Every knob of :func:`register` (recorded in metrics.json and the checkpoint).

    Attributes
    ----------
    model : str
        Zoo family of u (default 'siren', as IDIR).
    model_options : dict
        Options of the family. The default SIREN is small (3 x 64) with a low first-layer frequency: the
        deformations we look for are smooth, and a small network is several times faster per step.
    steps : int
        Adam steps over all levels.
    batch : int
        Random fixed-image points per step (for 'lncc': windows x points per window).
    lr : float
        Adam learning rate (cosine schedule).
    loss : {'ncc', 'lncc', 'mse'}
    jacobian, bending, hyperelastic : float
        Weights of the regularisers, evaluated by autograd on ``reg_points`` of the batch's points. The
        Jacobian weight is 10x below IDIR's 0.05: on the benchmark 0.05 kept u from following genuine
        volume changes (0.70 mm error against 0.39 mm at 0.005, no folding either way).
    reg_points : int
        Points of each batch on which the regularisers are computed (second derivatives are costly).
    levels : sequence of float
        Gaussian smoothing (sigma, in voxels of each image) of the coarse-to-fine levels, run in order with
        the steps split evenly; ``(0,)`` is a single level on the raw images.
    window : int
        Points per axis of a local-NCC window (spaced one fixed voxel apart).
    scale_mm : float or None
        Millimetres per unit of network output; default a tenth of the fixed box's mean half extent.
    """

    model: str = "siren"
    model_options: dict[str, Any] = field(
        default_factory=lambda: {"hidden": 64, "layers": 3, "omega_0": 8.0, "hidden_omega": 30.0}
    )
    steps: int = 300
    batch: int = 8000
    lr: float = 1e-3
    loss: str = "ncc"
    jacobian: float = 0.005
    bending: float = 0.0
    hyperelastic: float = 0.0
    reg_points: int = 1000
    levels: Sequence[float] = (2.0, 1.0, 0.0)
    window: int = 3
    scale_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d


#: Named settings: 'default' for accuracy per second, 'fast' for a quick look, 'idir' as published.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"steps": 150, "batch": 4000, "reg_points": 500, "levels": (2.0, 0.0)},
    "idir": {
        "model_options": {"hidden": 256, "layers": 3, "omega_0": 32.0, "hidden_omega": 32.0},
        "steps": 2500,
        "batch": 10000,
        "lr": 1e-5,
        "levels": (0.0,),
        "reg_points": 10000,
    },
}


def settings_from_preset(name: str, **overrides: Any) -> RegistrationSettings:
    """A :class:`RegistrationSettings` from a preset name plus explicit overrides (None values ignored)."""
    if name not in PRESETS:
        raise MedinrError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return RegistrationSettings(**values)


def normalise_intensity(
    image: np.ndarray, mask: np.ndarray | None = None, low: float = 0.5, high: float = 99.5
) -> tuple[np.ndarray, list[float]]:
    """Map the ``low``..``high`` percentiles (inside ``mask`` if given) onto 0..1, clipping outliers.

    Returns the normalised image and the two percentile values (input units).
    """
    values = image[mask > 0] if mask is not None and mask.shape == image.shape else image
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise MedinrError("the image has (almost) constant intensity: nothing to register")
    return np.clip((image - lo) / (hi - lo), -0.5, 1.5).astype(np.float32), [lo, hi]


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma) if sigma > 0 else image


def _level_of(step: int, steps: int, n_levels: int) -> int:
    return min(n_levels - 1, step * n_levels // max(steps, 1))


def _window_offsets(ndim: int, window: int) -> torch.Tensor:
    r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2.0
    return torch.stack(torch.meshgrid(*[r] * ndim, indexing="ij"), dim=-1).reshape(-1, ndim)


def register(
    fixed: np.ndarray,
    fixed_geometry: Geometry,
    moving: np.ndarray,
    moving_geometry: Geometry,
    settings: RegistrationSettings | None = None,
    fixed_mask: np.ndarray | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ContinuousImage:
    """Fit u so that ``moving(x + u(x)) ~ fixed(x)`` for world points x of the fixed image.

    Parameters
    ----------
    fixed, moving : ndarray
        Images indexed ``(i, j[, k])`` in any units; each lies in the world through its own geometry.
    fixed_geometry, moving_geometry : Geometry
        Must have the same dimension (2D with 2D, 3D with 3D).
    settings : RegistrationSettings, optional
    fixed_mask : ndarray, optional
        On the fixed grid; points are drawn only where it is non-zero.
    seed : int
    device : torch device
    progress : bool

    Returns
    -------
    ContinuousImage
        The displacement u: ``u(x)`` is in mm (RAS) at world points x (mm), on the fixed image's world box;
        ``extra`` records the settings and intensity windows, ``history`` the fit.
    """
    s = settings or RegistrationSettings()
    if fixed_geometry.ndim != moving_geometry.ndim:
        raise MedinrError(
            f"fixed image is {fixed_geometry.ndim}D but moving image is {moving_geometry.ndim}D: "
            "both must have the same dimension"
        )
    if s.loss not in LOSSES:
        raise MedinrError(f"unknown loss '{s.loss}'; choose one of: {', '.join(LOSSES)}")
    if s.steps < 1 or s.batch < 1:
        raise MedinrError("steps and batch must be positive")
    if min(s.jacobian, s.bending, s.hyperelastic) < 0:
        raise MedinrError("regulariser weights must be non-negative")
    if not s.levels:
        raise MedinrError("at least one level is needed")
    device = torch.device(device)
    ndim = fixed_geometry.ndim
    start = time.perf_counter()
    generator = seed_everything(seed)

    if fixed_mask is not None:
        if fixed_mask.shape != fixed.shape:
            raise MedinrError(f"the fixed mask has shape {fixed_mask.shape} but the fixed image has {fixed.shape}")
        if not np.any(fixed_mask > 0):
            raise MedinrError("the fixed mask is empty: no voxel to register")
    fixed_n, f_range = normalise_intensity(fixed, fixed_mask)
    moving_n, m_range = normalise_intensity(moving)

    # one pair of smoothed images per level, each smoothed in its own voxels
    fixed_levels = [Warper(_smooth(fixed_n, sg), fixed_geometry, device) for sg in s.levels]
    moving_levels = [Warper(_smooth(moving_n, sg), moving_geometry, device) for sg in s.levels]

    candidates = (
        np.argwhere(fixed_mask > 0) if fixed_mask is not None else np.argwhere(np.ones(fixed.shape, dtype=bool))
    )
    candidates_t = torch.as_tensor(candidates, dtype=torch.float32, device=device)
    upper = torch.as_tensor(np.asarray(fixed.shape, dtype=np.float32) - 1, device=device)

    box = fixed_geometry.world_box()
    scale_mm = s.scale_mm if s.scale_mm is not None else 0.1 * float(np.mean(box.half_extent_mm))
    model = build_model(s.model, ndim, ndim, **s.model_options)
    model.zero_output_()  # u = 0: the registration starts at the identity
    model.to(device).train()
    u_field = ContinuousImage(
        model, fixed_geometry, OutputMeaning("displacement", scale=scale_mm, units="mm"), "world_box", box
    )

    windowed = s.loss == "lncc"
    offsets = _window_offsets(ndim, s.window).to(device) if windowed else None
    n_centres = max(1, s.batch // (offsets.shape[0] if windowed else 1))

    def draw_points() -> torch.Tensor:
        idx = torch.randint(candidates_t.shape[0], (n_centres,), generator=generator).to(device)
        jitter = torch.rand((n_centres, ndim), generator=generator).to(device) - 0.5
        vox = candidates_t[idx] + jitter
        if windowed:
            vox = vox[:, None, :] + offsets[None]
        return fixed_geometry.voxel_to_world(vox.clamp(min=torch.zeros_like(upper), max=upper))

    def loss_fn(step: int) -> torch.Tensor:
        level = _level_of(step, s.steps, len(s.levels))
        x = draw_points()
        f = fixed_levels[level](x)
        w = moving_levels[level](x + u_field(x))
        loss = similarity(s.loss, f, w)
        reg, _ = regularisation(
            u_field, x.reshape(-1, ndim)[: s.reg_points], jacobian=s.jacobian, bending=s.bending, hyper=s.hyperelastic
        )
        extra = model.regularization()
        return loss + reg + (extra if extra is not None else 0.0)

    result = fit(
        model.param_groups(s.lr),
        loss_fn,
        steps=s.steps,
        lr=s.lr,
        schedule="cosine",
        progress=progress,
        description="registering",
    )
    model.eval()
    settings_used = RegistrationSettings(**{**s.to_dict(), "scale_mm": scale_mm})
    u_field.history = result
    u_field.extra = {
        "source": "medinr register",
        "settings": settings_used.to_dict(),
        "intensity": {"fixed_percentiles": f_range, "moving_percentiles": m_range},
        "seconds": time.perf_counter() - start,
    }
    return u_field
