"""The settings of a registration, one dataclass per stage, and the named presets.

A registration runs, in order: intensity preparation (:class:`IntensityPrep`), an optional affine stage
(:class:`AffineStage`), the deformable stage (:class:`SVFStage`, a stationary velocity field on lattices of the
fixed grid, or :class:`INRStage`, a network of world millimetres fitted on random points), and an optional
label term (:class:`LabelTerm`). :class:`RegistrationSettings` holds one of each. A preset names a whole set
(:data:`PRESETS`); :func:`settings_from_preset` applies flat overrides (the command line's names) to the stage
that owns each, and refuses one that no stage of the chosen transform has.

This module imports no torch: requests name and check these settings while arguments are parsed. Family
names are checked when the fit starts (:func:`RegistrationSettings.check`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from medinr.errors import MedinrError

AFFINE_MODES = ("auto", "on", "off")
TRANSFORMS = ("svf", "inr")
LOSSES = ("ncc", "lncc", "mse")
#: The SVF stage's velocity as the lattice's own node values (not a zoo family).
GRID = "grid"
#: The SVF grid's Adam rate when none is given, fixed voxels per step (chosen in
#: :func:`medinr.registration.register.learning_rate`).
GRID_RATE = 1.0


@dataclass(frozen=True)
class IntensityPrep:
    """``histogram_match``: map the moving intensities onto the fixed ones (quantiles of the foregrounds)
    before fitting."""

    histogram_match: bool = False


@dataclass(frozen=True)
class AffineStage:
    """The affine stage before the deformable one.

    Attributes
    ----------
    mode : {'auto', 'on', 'off'}
        'auto' runs it unless both images lie on the same grid (same shape, voxel size, orientation and
        position: the usual sign that they were resampled into one space).
    steps : int
        Adam steps: global NCC on coarse lattices of the fixed grid.
    levels : sequence of float
        Fixed voxels between the nodes per level (images smoothed by half of it).
    """

    mode: str = "auto"
    steps: int = 80
    levels: tuple[float, ...] = (4.0, 2.0)


@dataclass(frozen=True)
class LabelTerm:
    """``weight`` of the soft-Dice term when label maps are given (0: labels only evaluate)."""

    weight: float = 0.0


@dataclass(frozen=True)
class DeformableStage:
    """What both deformable stages share.

    Attributes
    ----------
    model : str
        SVF: 'grid' (the velocity is the lattice's node values) or a zoo family that parameterises v. INR: the
        zoo family of u.
    model_options : dict
        Options of the family, over its deformation defaults (:func:`medinr.models.tasks.task_defaults`).
    steps : int
        Adam steps over all levels.
    lr : float or None
        Adam rate; None: :data:`GRID_RATE` fixed voxels per step for 'grid', the family's deformation rate otherwise.
    loss : {'lncc', 'ncc', 'mse'}
        Similarity (local NCC in ``window``-wide boxes, global NCC, MSE).
    window : int
        Nodes per axis of a local-NCC box (SVF), points per axis of a window (INR).
    jacobian, bending, hyperelastic, fold : float
        Weights of ``|det J - 1|``, the bending energy, a hyperelastic energy and the folding penalty
        ``max(0, 0.2 - det J)``, at one corner of every lattice cell per step, each corner in turn (weight 3).
        With a folding weight above 0 an SVF's last step smooths the velocity where a cell corner is still below
        det J 0.01 (:func:`medinr.registration.svf.unfold`): no folded voxel on the panel by the exact Jacobian.
    symmetric : bool
        Also give the inverse (moving -> fixed).
    """

    model: str = GRID
    model_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 95
    lr: float | None = None
    loss: str = "lncc"
    window: int = 5
    jacobian: float = 0.0
    bending: float = 0.0
    hyperelastic: float = 0.0
    fold: float = 3.0
    symmetric: bool = False

    transform = "deformable"


@dataclass(frozen=True)
class SVFStage(DeformableStage):
    """A stationary velocity field on lattices of the fixed grid, u = exp(v) (:mod:`medinr.registration.svf`).

    Attributes
    ----------
    diffusion : float
        Weight of ``|grad v|^2`` (fixed voxels per lattice step).
    squarings : int
        Scaling-and-squaring steps of exp(v). 4 (was 6): the registration panels the same to the third decimal
        (same-subject 0.226 / 0.379 mm against 0.225 / 0.376, Dice between subjects 0.739 against 0.738), each
        squaring a tenth of a fine-level step.
    levels : sequence of (factor, evaluation factor, sigma, share)
        Coarse to fine: fixed voxels between velocity nodes, between similarity nodes (1: every fixed voxel),
        Gaussian smoothing of both images (voxels), and the share of ``steps``. Each level's rate is scaled
        by its spacings (:func:`medinr.registration.svf.level_rate`). A network velocity (``model`` other than
        the node values) keeps its nodes at least 3.5 voxels apart
        (:data:`medinr.registration.svf.NETWORK_NODE_FACTOR`).
    """

    diffusion: float = 0.03
    squarings: int = 4
    levels: tuple[tuple[float, float, float, float], ...] = ((4, 4, 2.0, 0.5), (3, 2, 1.0, 0.3), (2, 1, 0.5, 0.2))

    transform = "svf"


@dataclass(frozen=True)
class INRStage(DeformableStage):
    """A network u of world millimetres fitted on random points with autograd regularisers (IDIR-like).

    Attributes
    ----------
    batch, reg_points : int
        Random fixed-image points per step, and those the autograd regularisers use.
    levels : sequence of float
        Smoothing (sigma, voxels) of the coarse-to-fine levels, steps split evenly.
    scale_mm : float or None
        Millimetres per unit of network output; default a tenth of the fixed box's mean half extent.
    inverse_consistency : float
        Weight of ``|phi_inv(phi(x)) - x|^2`` (squared fixed voxels) when ``symmetric``.
    """

    model: str = "siren"
    steps: int = 300
    lr: float | None = 1e-3
    loss: str = "ncc"
    window: int = 3
    jacobian: float = 0.005
    batch: int = 8000
    reg_points: int = 1000
    levels: tuple[float, ...] = (2.0, 1.0, 0.0)
    scale_mm: float | None = None
    inverse_consistency: float = 0.1

    transform = "inr"


STAGES = {"svf": SVFStage, "inr": INRStage}


@dataclass(frozen=True)
class RegistrationSettings:
    """Every choice of :func:`medinr.registration.register`, by stage (recorded in metrics.json and the checkpoint).

    On bench/register.py's inter-subject panel (4 pairs, mean Dice GM/WM, median) the default SVF stage reaches
    0.753 without a folded voxel (SimpleITK demons 0.717, 15 folded voxels on its worst pair), and on its
    same-subject panel a median field error of 0.12 mm (demons 0.50), in less CPU time than demons
    (README, Registration).
    """

    deformable: SVFStage | INRStage = field(default_factory=SVFStage)
    affine: AffineStage = field(default_factory=AffineStage)
    labels: LabelTerm = field(default_factory=LabelTerm)
    intensity: IntensityPrep = field(default_factory=IntensityPrep)

    @property
    def transform(self) -> str:
        return self.deformable.transform

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "deformable": asdict(self.deformable), "affine": asdict(self.affine),
                "labels": asdict(self.labels), "intensity": asdict(self.intensity)}

    def check(self) -> None:
        """One clear error for a setting that cannot work (family names are checked when the model is built)."""
        d, a = self.deformable, self.affine
        if d.loss not in LOSSES:
            raise MedinrError(f"unknown loss '{d.loss}'; choose one of: {', '.join(LOSSES)}")
        if a.mode not in AFFINE_MODES:
            raise MedinrError(f"unknown affine mode '{a.mode}'; choose one of: {', '.join(AFFINE_MODES)}")
        if d.model == GRID and isinstance(d, INRStage):
            raise MedinrError("model 'grid' is the SVF's node lattice; --transform inr needs a zoo family")
        counts = [d.steps, a.steps, d.window] + ([d.batch, d.reg_points] if isinstance(d, INRStage) else [
            d.squarings + 1])
        if min(counts) < 1:
            raise MedinrError("steps, batch, affine steps, regulariser points and window must be positive")
        weights = [d.jacobian, d.bending, d.hyperelastic, d.fold, self.labels.weight, 0.0 if d.lr is None else d.lr]
        weights += [d.diffusion] if isinstance(d, SVFStage) else [d.inverse_consistency]
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise MedinrError("regulariser and loss weights and the learning rate must be finite and non-negative")
        if not d.levels or not a.levels:
            raise MedinrError("at least one level is needed")
        if isinstance(d, SVFStage) and any(len(v) != 4 or min(v[:2]) < 1 or v[2] < 0 or v[3] <= 0 for v in d.levels):
            raise MedinrError("each svf level is (factor >= 1, evaluation factor >= 1, sigma >= 0, share > 0)")


def _inr(**changes: Any) -> RegistrationSettings:
    return RegistrationSettings(deformable=INRStage(**changes))


#: Named settings: 'default' (svf) for accuracy per second, 'fast' for a quick look, 'inr' and 'inr-fast' the
#: point-sampled INR field (a SIREN 3 x 64 of first-layer frequency 16: its deformation defaults), 'idir' as
#: published.
PRESETS: dict[str, RegistrationSettings] = {
    "default": RegistrationSettings(),
    "fast": RegistrationSettings(
        # the default's rate and middle lattice, 60 steps, most of them coarse (bench/register.py, same run as the
        # default's choice: same-subject 0.23 mm, larger warps 1.21 mm, between subjects Dice 0.731 in 1.0-1.3 s)
        deformable=SVFStage(steps=60, levels=((4, 4, 2.0, 0.6), (3, 2, 1.0, 0.3), (2, 1, 0.5, 0.1))),
        affine=AffineStage(steps=60)),
    "inr": _inr(),
    "inr-fast": _inr(steps=150, batch=4000, reg_points=500, levels=(2.0, 0.0)),
    "idir": _inr(model_options={"hidden": 256, "layers": 3, "omega_0": 32.0, "hidden_omega": 32.0}, steps=2500,
                 batch=10000, lr=1e-5, levels=(0.0,), reg_points=10000),
}

#: Flat names (the command line's) of settings outside the deformable stage: name -> (stage, field).
_OUTER = {"affine": ("affine", "mode"), "affine_steps": ("affine", "steps"), "affine_levels": ("affine", "levels"),
          "label_weight": ("labels", "weight"), "histogram_match": ("intensity", "histogram_match")}


def _deformable(base: RegistrationSettings, name: str, transform: str | None, given: dict) -> DeformableStage:
    """The preset's deformable stage, or the other transform's own preset when ``transform`` switches it
    ('fast' -> 'inr-fast'), with ``given`` applied; a preset's model options belong to its own family."""
    stage = base.deformable
    if transform is not None and transform != stage.transform:
        if transform not in TRANSFORMS:
            raise MedinrError(f"unknown transform '{transform}'; choose one of: {', '.join(TRANSFORMS)}")
        stage = PRESETS["inr-fast" if name == "fast" else "inr"].deformable if transform == "inr" else SVFStage()
    own = {f.name for f in fields(stage)}
    foreign = sorted(set(given) - own)
    if foreign:
        raise MedinrError(f"'{foreign[0]}' is not a setting of the {stage.transform} transform")
    if "model" in given and given["model"] != stage.model:
        # a grid preset's rate is in voxels per step: a network velocity takes its family's rate instead
        stage = replace(stage, model_options={}, **({"lr": None} if stage.model == GRID else {}))
    options = {**stage.model_options, **given.pop("model_options", {})}
    return replace(stage, **given, model_options=options)


def settings_from_preset(name: str, **overrides: Any) -> RegistrationSettings:
    """A preset's :class:`RegistrationSettings` with flat ``overrides`` (None values ignored).

    Each override goes to the stage that owns it ('affine_steps' to the affine stage, 'batch' to the INR
    stage, ...); ``transform='inr'`` on an SVF preset starts from the INR preset ('inr-fast' for 'fast'). A
    name that the chosen transform does not have is refused, not ignored.
    """
    if name not in PRESETS:
        raise MedinrError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    base = PRESETS[name]
    outer: dict[str, dict[str, Any]] = {}
    for key in [k for k in given if k in _OUTER]:
        stage, attr = _OUTER[key]
        outer.setdefault(stage, {})[attr] = given.pop(key)
    deformable = _deformable(base, name, given.pop("transform", None), given)
    settings = RegistrationSettings(deformable, *(replace(getattr(base, s), **outer.get(s, {}))
                                                  for s in ("affine", "labels", "intensity")))
    settings.check()
    return settings

