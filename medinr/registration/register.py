"""The optimisation: an optional affine stage, then the deformable one, so that moving(x + u(x)) ~ fixed(x).

The deformable stage is a stationary velocity field on lattices of the fixed grid (:class:`SVFStage`, the
default: :mod:`medinr.registration.svf`) or an INR of world millimetres fitted on random points
(:class:`INRStage`; ``symmetric`` then fits a second INR for the inverse with an inverse-consistency term).
Both run coarse to fine through the one training loop (:func:`medinr.training.fit`); label maps, when given,
add a soft-Dice term. The settings, by stage, are :mod:`medinr.registration.settings`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.models import INR, MODEL_REGISTRY, build_model
from medinr.models.tasks import task_defaults
from medinr.registration.affine import centre_of_mass, dense_similarity_of, fit_affine, same_grid
from medinr.registration.losses import similarity, soft_dice
from medinr.registration.pair import Side, check_labels, match_histogram, normalise_intensity
from medinr.registration.regularizers import regularisation
from medinr.registration.settings import GRID, GRID_RATE, INRStage, RegistrationSettings, SVFStage
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
    network_levels,
)
from medinr.training.loop import Together, TrainResult, fit, seed_everything


def _check_family(stage: SVFStage | INRStage) -> None:
    known = sorted(MODEL_REGISTRY) + ([GRID] if isinstance(stage, SVFStage) else [])
    if stage.model not in known:
        raise MedinrError(f"unknown model '{stage.model}' for transform '{stage.transform}'; choose one of: "
                          f"{', '.join(known)}")
    if stage.model != GRID and MODEL_REGISTRY[stage.model].lattice_bound:
        raise MedinrError(f"model '{stage.model}' is lattice-bound: a displacement must be queried at any point")


def _network(stage: SVFStage | INRStage, geometry: Geometry) -> tuple[INR, float]:
    """The deformable stage's zoo network (its output exactly zero: the identity) and its Adam rate."""
    defaults = task_defaults(stage.model, "deformation", tuple(geometry.shape), stage.model_options)
    model = build_model(stage.model, geometry.ndim, geometry.ndim, **defaults.options)
    model.zero_output_()
    return model, float(stage.lr if stage.lr is not None else defaults.lr)


def learning_rate(stage: SVFStage | INRStage, geometry: Geometry) -> float:
    """The Adam rate used: ``lr``, else :data:`GRID_RATE` fixed voxels per step (SVF grid) or the family's
    deformation rate.

    1.0 with the middle level's velocity nodes 3 voxels apart (was 0.5 and 2), chosen on bench/register.py's
    panels (2 threads, same session), mean field error median / worst: 6 same-subject pairs (3 brains x 2 warps of
    ~3 mm mean) 0.116 / 0.160 mm (0.5: 0.129 / 0.195; before 0.226 / 0.379; SimpleITK demons 0.499 / 0.530);
    3 pairs of larger warps (6 mm mean, sigma 12 mm) 0.80 / 1.97 mm (0.5: 1.14 / 2.76; before 1.91 / 3.83; demons
    1.17 / 2.17); 4 inter-subject pairs, Dice GM/WM median / worst 0.753 / 0.717 (0.5: 0.739 / 0.704; demons
    0.717 / 0.685); no folded voxel. 1.2-2.0 gained on the larger warps but lost within one subject, and 1.6
    left one voxel folded between subjects. An image registered to itself keeps a dither of about 0.04 voxels
    (0.02 at 0.5; ``tests/test_registration``).
    """
    if stage.lr is not None:
        return float(stage.lr)
    if stage.model == GRID:
        return GRID_RATE
    return task_defaults(stage.model, "deformation", tuple(geometry.shape), stage.model_options).lr


def _level_of(step: int, steps: int, n_levels: int) -> int:
    return min(n_levels - 1, step * n_levels // max(steps, 1))


def _window_offsets(ndim: int, window: int) -> torch.Tensor:
    r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2.0
    return torch.stack(torch.meshgrid(*[r] * ndim, indexing="ij"), dim=-1).reshape(-1, ndim)


def new_field(stage: INRStage, geometry: Geometry, affine: np.ndarray | None, device) -> ContinuousImage:
    """A displacement image on ``geometry``'s world box that starts exactly at ``affine`` (identity: None).

    The network's output is zeroed through the family's ``zero_output_`` hook, so u(x) = M x - x at step 0.
    """
    box = geometry.world_box()
    scale_mm = stage.scale_mm if stage.scale_mm is not None else 0.1 * float(np.mean(box.half_extent_mm))
    model, _ = _network(stage, geometry)
    model.to(device).train()
    matrix = None if affine is None else affine.tolist()
    output = OutputMeaning("displacement", scale=scale_mm, units="mm", affine=matrix)
    return ContinuousImage(model, geometry, output, "world_box", box)


def _network_part(image: ContinuousImage) -> Callable[[torch.Tensor], torch.Tensor]:
    """The INR's own displacement (without the affine part): what the regularisers smooth."""
    return lambda x: image.to_output_units(image.model(image.to_network(x)))


def _affine_stage(s: RegistrationSettings, fixed: tuple, moving: tuple, progress) -> tuple[np.ndarray, TrainResult]:
    """Centre-of-mass start, then Adam on global NCC on coarse lattices: the fixed->moving world matrix."""
    (f_img, fg, f_mask), (m_img, mg) = fixed, moving
    centre = centre_of_mass(f_img, fg, f_mask)
    shift = centre_of_mass(m_img, mg) - centre
    a = s.affine
    loss = dense_similarity_of((f_img, fg), (m_img, mg), a.levels, a.steps, f_mask)
    return fit_affine(loss, centre, shift, a.steps, progress=progress)


def _one_way(s: INRStage, label_weight: float, src: Side, dst: Side, image: ContinuousImage, other,
             generator) -> Callable:
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
        if src.labels is not None and label_weight > 0:
            loss = loss + label_weight * soft_dice(src.labels(x.reshape(-1, ndim)), dst.labels(y.reshape(-1, ndim)))
        xr = x.reshape(-1, ndim)[: s.reg_points]
        reg, _ = regularisation(deformable, xr, jacobian=s.jacobian, bending=s.bending, hyper=s.hyperelastic,
                                fold=s.fold)
        loss = loss + reg
        if other is not None and s.inverse_consistency > 0:
            yr = y.reshape(-1, ndim)[: s.reg_points]
            loss = loss + s.inverse_consistency * (yr + other(yr) - xr).square().sum(-1).mean() / voxel2
        return loss

    return loss_fn


def _prepare(s: RegistrationSettings, fixed, fg, moving, mg, fixed_mask, labels) -> tuple:
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
    if s.labels.weight > 0 and labels is None:
        raise MedinrError("a label weight needs both label images (fixed and moving labels)")
    fixed_n, f_range = normalise_intensity(fixed, fixed_mask)
    moving_n, m_range = normalise_intensity(moving)
    if s.intensity.histogram_match:
        moving_n = match_histogram(moving_n, fixed_n)
    return fixed_n, moving_n, {"fixed_percentiles": f_range, "moving_percentiles": m_range}, values


def _register_inr(s: RegistrationSettings, pair: tuple, matrix, fixed_mask, labels, values, generator, device,
                  progress) -> tuple[ContinuousImage, ContinuousImage | None, TrainResult]:
    """The point-sampled INR field (and its inverse network in symmetric mode), fitted together."""
    stage, weight = s.deformable, s.labels.weight
    fixed_n, fg, moving_n, mg = pair
    lab = labels if labels is not None and weight > 0 else (None, None)
    fs = Side.build(fixed_n, fg, stage.levels, fixed_mask, lab[0], values, device)
    ms = Side.build(moving_n, mg, stage.levels, None, lab[1], values, device)
    forward = new_field(stage, fg, matrix, device)
    inverse = new_field(stage, mg, None if matrix is None else np.linalg.inv(matrix), device) if stage.symmetric \
        else None
    losses = [_one_way(stage, weight, fs, ms, forward, inverse, generator)]
    if inverse is not None:
        losses.append(_one_way(stage, weight, ms, fs, inverse, forward, generator))
    target = forward.model if inverse is None else Together([forward.model, inverse.model])
    result = fit(target, lambda step: sum(f(step) for f in losses), stage.steps, learning_rate(stage, fg),
                 "cosine", progress=progress, description="registering")
    return forward, inverse, result


def _register_svf(s: RegistrationSettings, pair: tuple, matrix, fixed_mask, labels, values, device,
                  progress) -> tuple[ContinuousImage, ContinuousImage | None, TrainResult]:
    """The stationary velocity field; the inverse is exp(-v) (no extra fit)."""
    stage = s.deformable
    fixed_n, fg, moving_n, mg = pair
    onehot = None
    if labels is not None and s.labels.weight > 0:
        onehot = tuple(np.stack([(np.rint(lab) == v).astype(np.float32) for v in values]) for lab in labels)
    problem = SVFProblem(fixed_n, fg, moving_n, mg, matrix, fixed_mask, onehot)
    penalties = Penalties(stage.diffusion, stage.fold, stage.jacobian, stage.hyperelastic, stage.bending)
    levels = svf_levels(stage)
    if stage.model == GRID:
        velocity = GridVelocity(lattice_shape(fg.shape, levels[0][0]))
    else:
        model, _ = _network(stage, fg)
        velocity = ModelVelocity(model.to(device).train(), scale=float(np.max(fg.shape)) / 10.0)
    options = {"steps": stage.steps, "lr": learning_rate(stage, fg), "loss": stage.loss, "window": stage.window,
               "label_weight": s.labels.weight, "squarings": stage.squarings, "penalties": penalties}
    v, result = fit_svf(problem, levels, velocity, options, progress=progress)
    forward = displacement_image(integrate(v, stage.squarings), fg, matrix)
    inverse = inverse_image(integrate(-v, stage.squarings), fg, mg, matrix, levels[-1][0]) \
        if stage.symmetric else None
    return forward, inverse, result


def svf_levels(stage: SVFStage) -> tuple[tuple[float, ...], ...]:
    """The levels an SVF stage runs: its own for the node-value velocity, with nodes at least
    :data:`~medinr.registration.svf.NETWORK_NODE_FACTOR` voxels apart for a network (``--model``)."""
    return tuple(stage.levels) if stage.model == GRID else network_levels(stage.levels)


def _record(s: RegistrationSettings, forward: ContinuousImage, fg: Geometry, affine_used: bool) -> dict:
    """The settings as used: every stage, and what was resolved at run time (rate, output scale, options)."""
    stage = s.deformable
    shape = tuple(fg.shape)
    options = task_defaults(stage.model, "deformation", shape, stage.model_options).options if stage.model != GRID \
        else {}
    resolved = {"lr": learning_rate(stage, fg), "scale_mm": forward.output.scale, "affine_used": bool(affine_used),
                "model_options": options}
    if isinstance(stage, SVFStage):
        resolved["levels"] = [list(spec) for spec in svf_levels(stage)]
    return {**s.to_dict(), "resolved": resolved}


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
    world box, moving -> fixed) when the deformable stage is ``symmetric``, else None."""
    s = settings or RegistrationSettings()
    s.check()
    _check_family(s.deformable)
    device, generator = torch.device(device), seed_everything(seed)
    fixed_n, moving_n, intensity, values = _prepare(s, fixed, fixed_geometry, moving, moving_geometry, fixed_mask,
                                                    labels)
    mode = s.affine.mode
    run_affine = mode == "on" or (mode == "auto" and not same_grid(fixed_geometry, moving_geometry))
    matrix, stages = None, {}
    if run_affine:
        matrix, affine_fit = _affine_stage(s, (fixed_n, fixed_geometry, fixed_mask), (moving_n, moving_geometry),
                                           progress)
        stages["affine"] = affine_fit.timing()
    pair = (fixed_n, fixed_geometry, moving_n, moving_geometry)
    if s.transform == "svf":
        forward, inverse, result = _register_svf(s, pair, matrix, fixed_mask, labels, values, device, progress)
    else:
        forward, inverse, result = _register_inr(s, pair, matrix, fixed_mask, labels, values, generator, device,
                                                 progress)
    result.stages = {**stages, **(result.stages or {"deformable": result.timing()})}
    used = _record(s, forward, fixed_geometry, run_affine)
    for image in (forward, inverse):
        if image is not None:
            image.model.eval()
            image.history = result
            image.extra = {"source": "medinr register", "settings": used, "intensity": intensity}
    if inverse is not None:
        inverse.extra["direction"] = "inverse: moving grid -> fixed"
    return forward, inverse


def register(
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
) -> ContinuousImage:
    """Fit u so that ``moving(x + u(x)) ~ fixed(x)`` for world points x of the fixed image.

    Parameters
    ----------
    fixed, moving : ndarray
        Images indexed ``(i, j[, k])`` in any units; each lies in the world through its own geometry.
    fixed_geometry, moving_geometry : Geometry
        Must have the same dimension (2D with 2D, 3D with 3D).
    settings : RegistrationSettings, optional
        Every stage's settings (default: the 'default' preset, :mod:`medinr.registration.settings`).
    fixed_mask : ndarray, optional
        On the fixed grid; points are drawn only where it is non-zero.
    labels : (ndarray, ndarray), optional
        Fixed and moving label maps on their images' grids; used by the fit when the label term's weight is
        positive (soft Dice of the label values both share), otherwise only checked.
    seed : int
    device : torch device
    progress : bool

    Returns
    -------
    ContinuousImage
        The displacement u: ``u(x)`` is in mm (RAS) at world points x (mm), on the fixed image's world box,
        the affine stage included (``output.affine``); ``extra`` records the settings and intensity windows,
        ``history`` the fit (each stage timed in ``history.stages``).
    """
    return register_with_inverse(fixed, fixed_geometry, moving, moving_geometry, settings, fixed_mask, labels,
                                 seed, device, progress)[0]
