"""The optimisation: an optional affine stage, then the deformable one, so that moving(x + u(x)) ~ fixed(x).

The deformable stage is a stationary velocity field on lattices of the fixed grid (``transform='svf'``, the
default: :mod:`medinr.registration.svf`) or an INR of world millimetres fitted on random points
(``transform='inr'``; ``symmetric`` then fits a second INR for the inverse with an inverse-consistency term).
Both run coarse to fine; label maps, when given, add a soft-Dice term.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.fit import fit, seed_everything
from medinr.geometry import Geometry
from medinr.models import MODEL_REGISTRY, build_model
from medinr.registration.affine import centre_of_mass, dense_similarity_of, fit_affine, same_grid
from medinr.registration.losses import LOSSES, similarity, soft_dice
from medinr.registration.pair import Side, check_labels, match_histogram, normalise_intensity
from medinr.registration.regularizers import regularisation
from medinr.registration.svf import (
    GridVelocity,
    ModelVelocity,
    Penalties,
    SVFProblem,
    displacement_image,
    fit_svf,
    integrate,
    inverse_image,
    lattice_shape,
)

AFFINE_MODES = ("auto", "on", "off")
TRANSFORMS = ("svf", "inr")


@dataclass
class RegistrationSettings:
    """Every knob of :func:`register` (recorded in metrics.json and the checkpoint).

    Attributes
    ----------
    transform : {'svf', 'inr'}
        'svf' (default): a stationary velocity field on lattices of the fixed grid, u = exp(v) by scaling and
        squaring, dense similarity, finite-difference regularisers (:mod:`medinr.registration.svf`).
        'inr': u is a network of world mm fitted on random points with autograd regularisers (IDIR-like).
        On the inter-subject panel (4 pairs, mean Dice GM/WM) 'svf' reached 0.717 without a folded voxel
        (SimpleITK demons 0.710, in 3.5 s against 5.6 s); the best 'inr' setting 0.67 (README, Registration).
    model : str
        'svf': 'grid' (the velocity is the lattice's node values) or a zoo family that parameterises v
        (evaluated at the nodes, e.g. 'kan'). 'inr': the zoo family of u (default 'siren', as IDIR).
    model_options : dict
        Options of the family ('inr' default: SIREN 3 x 64, first-layer frequency 16).
    steps : int
        Adam steps of the deformable stage over all levels.
    batch, reg_points : int
        'inr' only: random fixed-image points per step, and those the autograd regularisers use.
    lr : float or None
        Adam learning rate; None: 0.3 fixed voxels per step for 'grid', the family's default for a zoo model.
    loss : {'lncc', 'ncc', 'mse'}
        'svf' default 'lncc' (local NCC in ``window``-node boxes of the evaluation lattice): on the panel it
        beat global NCC and MSE after histogram matching (README table).
    window : int
        Nodes per axis of a local-NCC box ('svf'; 5), or points per axis of an 'inr' window (3).
    diffusion : float
        'svf': weight of ``|grad v|^2`` (fixed voxels per lattice step).
    jacobian, bending, hyperelastic, fold : float
        Regularisers: ``|det J - 1|``, bending energy, a hyperelastic energy and the folding penalty
        ``max(0, 0.2 - det J)`` (weight 3: no folded voxel on the panel). 'svf': finite differences of the
        integrated field on the lattice (bending: second differences of v); 'inr': autograd at points.
    squarings : int
        'svf': scaling-and-squaring steps of exp(v) (v / 2^K composed K times).
    svf_levels : sequence of (factor, evaluation factor, sigma, share)
        'svf' coarse to fine: fixed voxels between velocity nodes, between similarity nodes (1: every fixed
        voxel), Gaussian smoothing of both images (their voxels), and the share of ``steps``. The last level
        evaluates the similarity on the full fixed grid with barely smoothed images (the field itself stays on
        the 2-voxel lattice); each level's rate is scaled by its spacings (:func:`svf.level_rate`).
    levels : sequence of float
        'inr': smoothing (sigma, voxels) of the coarse-to-fine levels, steps split evenly.
    scale_mm : float or None
        'inr': millimetres per unit of network output; default a tenth of the fixed box's mean half extent.
    affine : {'auto', 'on', 'off'}
        The affine stage before the deformable one. 'auto' runs it unless both images lie on the same grid
        (same shape, voxel size, orientation and position: the usual sign that they were resampled into one
        space).
    affine_steps : int
        Adam steps of the affine stage: global NCC on coarse lattices of the fixed grid.
    affine_levels : sequence of float
        Fixed voxels between the affine stage's nodes per level (images smoothed by half of it).
    symmetric : bool
        Also give the inverse (moving -> fixed): 'svf' integrates -v (exactly inverse in the continuum, no
        extra fit); 'inr' fits a second network with an inverse-consistency term.
    inverse_consistency : float
        'inr': weight of ``|phi_inv(phi(x)) - x|^2`` (in squared fixed voxels) in symmetric mode.
    label_weight : float
        Weight of the soft-Dice term when label maps are given (0: labels are not used by the fit).
    histogram_match : bool
        Map the moving intensities onto the fixed ones (quantiles of the foregrounds) before fitting.
    """

    transform: str = "svf"
    model: str = "grid"
    model_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 110
    batch: int = 8000
    lr: float | None = None
    loss: str = "lncc"
    jacobian: float = 0.0
    bending: float = 0.0
    hyperelastic: float = 0.0
    fold: float = 3.0
    diffusion: float = 0.03
    squarings: int = 6
    svf_levels: Sequence[Sequence[float]] = ((4, 4, 2.0, 0.5), (2, 2, 1.0, 0.3), (2, 1, 0.5, 0.2))
    reg_points: int = 1000
    levels: Sequence[float] = (2.0, 1.0, 0.0)
    window: int = 5
    scale_mm: float | None = None
    affine: str = "auto"
    affine_steps: int = 80
    affine_levels: Sequence[float] = (4.0, 2.0)
    symmetric: bool = False
    inverse_consistency: float = 0.1
    label_weight: float = 0.0
    histogram_match: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"], d["affine_levels"] = list(self.levels), list(self.affine_levels)
        d["svf_levels"] = [list(v) for v in self.svf_levels]
        return d

    def learning_rate(self) -> float:
        """The Adam rate used: ``lr``, else 0.3 fixed voxels per step ('svf' grid) or the family's default."""
        if self.lr is not None:
            return float(self.lr)
        return 0.3 if self.model == "grid" else float(MODEL_REGISTRY[self.model].for_task("deformation", ()).lr)

    def check(self) -> None:
        """One clear error for a setting that cannot work."""
        if self.transform not in TRANSFORMS:
            raise MedinrError(f"unknown transform '{self.transform}'; choose one of: {', '.join(TRANSFORMS)}")
        if self.loss not in LOSSES:
            raise MedinrError(f"unknown loss '{self.loss}'; choose one of: {', '.join(LOSSES)}")
        if self.affine not in AFFINE_MODES:
            raise MedinrError(f"unknown affine mode '{self.affine}'; choose one of: {', '.join(AFFINE_MODES)}")
        known = sorted(MODEL_REGISTRY) + (["grid"] if self.transform == "svf" else [])
        if self.model not in known:
            raise MedinrError(f"unknown model '{self.model}' for transform '{self.transform}'; choose one of: "
                              f"{', '.join(known)}")
        if self.model != "grid" and MODEL_REGISTRY[self.model].lattice_bound:
            raise MedinrError(f"model '{self.model}' is lattice-bound: a displacement must be queried at any point")
        if min(self.steps, self.batch, self.affine_steps, self.reg_points, self.window, self.squarings + 1) < 1:
            raise MedinrError("steps, batch, affine steps, regulariser points and window must be positive")
        weights = (self.jacobian, self.bending, self.hyperelastic, self.fold, self.inverse_consistency,
                   self.label_weight, self.diffusion, 0.0 if self.lr is None else self.lr)
        if not all(np.isfinite(w) and w >= 0 for w in weights):
            raise MedinrError("regulariser and loss weights and the learning rate must be finite and non-negative")
        if not self.levels or not self.affine_levels or not self.svf_levels:
            raise MedinrError("at least one level is needed")
        if any(len(v) != 4 or min(v[:2]) < 1 or v[2] < 0 or v[3] <= 0 for v in self.svf_levels):
            raise MedinrError("each svf level is (factor >= 1, evaluation factor >= 1, sigma >= 0, share > 0)")


#: The first round's point-sampled INR default (SIREN 3 x 64, omega 16, autograd regularisers), kept as 'inr'.
INR_DEFAULT: dict[str, Any] = {
    "transform": "inr", "model": "siren", "steps": 300, "lr": 1e-3, "loss": "ncc", "jacobian": 0.005,
    "window": 3, "affine_steps": 80,
    "model_options": {"hidden": 64, "layers": 3, "omega_0": 16.0, "hidden_omega": 30.0},
}
#: Named settings: 'default' (svf) for accuracy per second, 'fast' for a quick look, 'inr' and 'inr-fast' the
#: point-sampled INR field, 'idir' as published.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"steps": 60, "svf_levels": ((4, 4, 2.0, 0.6), (2, 2, 1.0, 0.3), (2, 1, 0.5, 0.1)), "affine_steps": 60},
    "inr": INR_DEFAULT,
    "inr-fast": {**INR_DEFAULT, "steps": 150, "batch": 4000, "reg_points": 500, "levels": (2.0, 0.0)},
    "idir": {
        **INR_DEFAULT,
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
    given = {k: v for k, v in overrides.items() if v is not None}
    base = PRESETS[name]
    if given.get("transform") == "inr" and base.get("transform", "svf") != "inr":
        base = PRESETS["inr-fast" if name == "fast" else "inr"]  # the point-sampled field's own defaults
    values = {**base, **given}
    return RegistrationSettings(**values)


def _level_of(step: int, steps: int, n_levels: int) -> int:
    return min(n_levels - 1, step * n_levels // max(steps, 1))


def _window_offsets(ndim: int, window: int) -> torch.Tensor:
    r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2.0
    return torch.stack(torch.meshgrid(*[r] * ndim, indexing="ij"), dim=-1).reshape(-1, ndim)


def new_field(s: RegistrationSettings, geometry: Geometry, affine: np.ndarray | None, device) -> ContinuousImage:
    """A displacement image on ``geometry``'s world box that starts exactly at ``affine`` (identity: None).

    The network's output is zeroed through the family's ``zero_output_`` hook, so u(x) = M x - x at step 0.
    """
    box = geometry.world_box()
    scale_mm = s.scale_mm if s.scale_mm is not None else 0.1 * float(np.mean(box.half_extent_mm))
    model = build_model(s.model, geometry.ndim, geometry.ndim, **s.model_options)
    model.zero_output_()
    model.to(device).train()
    matrix = None if affine is None else affine.tolist()
    output = OutputMeaning("displacement", scale=scale_mm, units="mm", affine=matrix)
    return ContinuousImage(model, geometry, output, "world_box", box)


def _network_part(image: ContinuousImage) -> Callable[[torch.Tensor], torch.Tensor]:
    """The INR's own displacement (without the affine part): what the regularisers smooth."""
    return lambda x: image.to_output_units(image.model(image.to_network(x)))


def _affine_stage(s: RegistrationSettings, fixed: tuple, moving: tuple, progress) -> np.ndarray:
    """Centre-of-mass start, then Adam on global NCC on coarse lattices: the fixed->moving world matrix."""
    (f_img, fg, f_mask), (m_img, mg) = fixed, moving
    centre = centre_of_mass(f_img, fg, f_mask)
    shift = centre_of_mass(m_img, mg) - centre
    loss = dense_similarity_of((f_img, fg), (m_img, mg), s.affine_levels, s.affine_steps, f_mask)
    matrix, _ = fit_affine(loss, centre, shift, s.affine_steps, progress=progress)
    return matrix


def _one_way(s: RegistrationSettings, src: Side, dst: Side, image: ContinuousImage, other, generator) -> Callable:
    """The loss of one direction: similarity, labels, regularisers and (symmetric) inverse consistency."""
    ndim = src.geometry.ndim
    offsets = _window_offsets(ndim, s.window).to(src.candidates.device) if s.loss == "lncc" else None
    n_centres = max(1, s.batch // (offsets.shape[0] if offsets is not None else 1))
    voxel2 = float(np.mean(src.geometry.spacing)) ** 2
    deformable = _network_part(image)

    def loss_fn(step: int) -> torch.Tensor:
        level = _level_of(step, s.steps, len(s.levels))
        x = src.draw(n_centres, generator, offsets)
        y = x + image(x)
        loss = similarity(s.loss, src.levels[level](x), dst.levels[level](y))
        if src.labels is not None and s.label_weight > 0:
            loss = loss + s.label_weight * soft_dice(src.labels(x.reshape(-1, ndim)), dst.labels(y.reshape(-1, ndim)))
        xr = x.reshape(-1, ndim)[: s.reg_points]
        reg, _ = regularisation(deformable, xr, jacobian=s.jacobian, bending=s.bending, hyper=s.hyperelastic,
                                fold=s.fold)
        loss = loss + reg
        if other is not None and s.inverse_consistency > 0:
            yr = y.reshape(-1, ndim)[: s.reg_points]
            loss = loss + s.inverse_consistency * (yr + other(yr) - xr).square().sum(-1).mean() / voxel2
        extra = image.model.regularization()
        return loss + extra if extra is not None else loss

    return loss_fn


def _prepare(s, fixed, fg, moving, mg, fixed_mask, labels) -> tuple[np.ndarray, np.ndarray, dict, list]:
    """Check the inputs, normalise intensities (and match histograms); the shared label values."""
    if fg.ndim != mg.ndim:
        raise MedinrError(f"fixed image is {fg.ndim}D but moving image is {mg.ndim}D: both must be 2D or 3D alike")
    if fixed.shape != tuple(fg.shape) or moving.shape != tuple(mg.shape):
        raise MedinrError("each image must have the shape of its geometry")
    if fixed_mask is not None:
        if fixed_mask.shape != fixed.shape:
            raise MedinrError(f"the fixed mask has shape {fixed_mask.shape} but the fixed image has {fixed.shape}")
        if not np.any(fixed_mask > 0):
            raise MedinrError("the fixed mask is empty: no voxel to register")
    values = check_labels(labels[0], fixed.shape, labels[1], moving.shape) if labels is not None else []
    if s.label_weight > 0 and labels is None:
        raise MedinrError("a label weight needs both label images (fixed and moving labels)")
    fixed_n, f_range = normalise_intensity(fixed, fixed_mask)
    moving_n, m_range = normalise_intensity(moving)
    if s.histogram_match:
        moving_n = match_histogram(moving_n, fixed_n)
    return fixed_n, moving_n, {"fixed_percentiles": f_range, "moving_percentiles": m_range}, values


def _register_inr(s: RegistrationSettings, pair: tuple, matrix, fixed_mask, labels, values, generator, device,
                  progress) -> tuple[ContinuousImage, ContinuousImage | None, Any]:
    """The point-sampled INR field (and its inverse network in symmetric mode)."""
    fixed_n, fg, moving_n, mg = pair
    lab = labels if labels is not None and s.label_weight > 0 else (None, None)
    fs = Side.build(fixed_n, fg, s.levels, fixed_mask, lab[0], values, device)
    ms = Side.build(moving_n, mg, s.levels, None, lab[1], values, device)
    forward = new_field(s, fg, matrix, device)
    inverse = new_field(s, mg, None if matrix is None else np.linalg.inv(matrix), device) if s.symmetric else None
    losses = [_one_way(s, fs, ms, forward, inverse, generator)]
    lr = s.learning_rate()
    params = forward.model.param_groups(lr)
    if inverse is not None:
        losses.append(_one_way(s, ms, fs, inverse, forward, generator))
        params = params + inverse.model.param_groups(lr)
    result = fit(params, lambda step: sum(f(step) for f in losses), steps=s.steps, lr=lr, schedule="cosine",
                 progress=progress, description="registering")
    return forward, inverse, result


def _register_svf(s: RegistrationSettings, pair: tuple, matrix, fixed_mask, labels, values, device,
                  progress) -> tuple[ContinuousImage, ContinuousImage | None, Any]:
    """The stationary velocity field; the inverse is exp(-v) (no extra fit)."""
    fixed_n, fg, moving_n, mg = pair
    onehot = None
    if labels is not None and s.label_weight > 0:
        onehot = tuple(np.stack([(np.rint(lab) == v).astype(np.float32) for v in values]) for lab in labels)
    problem = SVFProblem(fixed_n, fg, moving_n, mg, matrix, fixed_mask, onehot)
    penalties = Penalties(s.diffusion, s.fold, s.jacobian, s.hyperelastic, s.bending)
    if s.model == "grid":
        velocity = GridVelocity(lattice_shape(fg.shape, s.svf_levels[0][0]))
    else:
        model = build_model(s.model, fg.ndim, fg.ndim, **s.model_options)
        model.zero_output_()
        velocity = ModelVelocity(model.to(device).train(), scale=float(np.max(fg.shape)) / 10.0)
    options = {"steps": s.steps, "lr": s.learning_rate(), "loss": s.loss, "window": s.window,
               "label_weight": s.label_weight, "squarings": s.squarings, "penalties": penalties}
    v, result = fit_svf(problem, s.svf_levels, velocity, options, progress=progress)
    forward = displacement_image(integrate(v, s.squarings), fg, matrix)
    inverse = inverse_image(integrate(-v, s.squarings), fg, mg, matrix, s.svf_levels[-1][0]) if s.symmetric \
        else None
    return forward, inverse, result


def register_with_inverse(
    fixed: np.ndarray,
    fixed_geometry: Geometry,
    moving: np.ndarray,
    moving_geometry: Geometry,
    settings: RegistrationSettings | None = None,
    fixed_mask: np.ndarray | None = None,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[ContinuousImage, ContinuousImage | None]:
    """:func:`register` (same arguments), also returning the inverse field (on the moving image's grid or
    world box, moving -> fixed) when ``settings.symmetric``, else None."""
    s = settings or RegistrationSettings()
    s.check()
    device, start, generator = torch.device(device), time.perf_counter(), seed_everything(seed)
    fixed_n, moving_n, intensity, values = _prepare(s, fixed, fixed_geometry, moving, moving_geometry, fixed_mask,
                                                    labels)
    run_affine = s.affine == "on" or (s.affine == "auto" and not same_grid(fixed_geometry, moving_geometry))
    matrix = None
    if run_affine:
        matrix = _affine_stage(s, (fixed_n, fixed_geometry, fixed_mask), (moving_n, moving_geometry), progress)
    pair = (fixed_n, fixed_geometry, moving_n, moving_geometry)
    if s.transform == "svf":
        forward, inverse, result = _register_svf(s, pair, matrix, fixed_mask, labels, values, device, progress)
    else:
        forward, inverse, result = _register_inr(s, pair, matrix, fixed_mask, labels, values, generator, device,
                                                 progress)
    used = RegistrationSettings(**{**s.to_dict(), "scale_mm": forward.output.scale, "lr": s.learning_rate()})
    used = used.to_dict()
    used["affine_used"] = bool(run_affine)
    for image in (forward, inverse):
        if image is not None:
            image.model.eval()
            image.history = result
            image.extra = {"source": "medinr register", "settings": used, "intensity": intensity,
                           "seconds": time.perf_counter() - start}
    if inverse is not None:
        inverse.extra["direction"] = "inverse: moving grid -> fixed"
    return forward, inverse


def register(*args: Any, **kwargs: Any) -> ContinuousImage:
    """Fit u so that ``moving(x + u(x)) ~ fixed(x)`` for world points x of the fixed image.

    The arguments are those of :func:`register_with_inverse`:
    ``(fixed, fixed_geometry, moving, moving_geometry, settings=None, fixed_mask=None, labels=None, seed=0,
    device='cpu', progress=False)``.

    Parameters
    ----------
    fixed, moving : ndarray
        Images indexed ``(i, j[, k])`` in any units; each lies in the world through its own geometry.
    fixed_geometry, moving_geometry : Geometry
        Must have the same dimension (2D with 2D, 3D with 3D).
    settings : RegistrationSettings, optional
    fixed_mask : ndarray, optional
        On the fixed grid; points are drawn only where it is non-zero.
    labels : (ndarray, ndarray), optional
        Fixed and moving label maps on their images' grids; used by the fit when ``settings.label_weight > 0``
        (soft Dice of the label values both share), otherwise only checked.
    seed : int
    device : torch device
    progress : bool

    Returns
    -------
    ContinuousImage
        The displacement u: ``u(x)`` is in mm (RAS) at world points x (mm), on the fixed image's world box,
        the affine stage included (``output.affine``); ``extra`` records the settings and intensity windows,
        ``history`` the fit.
    """
    return register_with_inverse(*args, **kwargs)[0]
