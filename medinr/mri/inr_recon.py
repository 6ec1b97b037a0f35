"""INR reconstruction: an image-domain INR (complex output) fitted to the acquired k-space through SENSE,
self-calibrated.

The network maps grid coordinates to (real, imaginary); its image goes through the whitened SENSE operator
(:class:`medinr.mri.operators.SenseOp` on noise-whitened data, :mod:`medinr.mri.noise`) and the loss is the
residual energy on the fitting samples plus total variation and L1-wavelet priors on the image. What used to
be fixed is chosen per scan from held-out acquired samples: the weights along a regularisation path
(:class:`medinr.mri.config.RegularisationPath`), the grid levels unlocked (coarse to fine) and the stopping
step, by the best-iterate rule of :mod:`medinr.training.selection` on the held-out readouts
(:class:`medinr.training.HeldOutSamples`, scored from the residual of each step's own forward pass); the
model is then refitted on every sample with the chosen settings (:class:`medinr.training.FinalStage`), unless
the held-out samples are quiet (hardly more than noise), where a slower walk's chosen state is kept
(:func:`self_calibrate`). No choice uses a ground truth. The loop is :func:`medinr.training.fit`. The path's first
steps may fit the centre of k-space at half the resolution, where a step costs a fraction of a full one
(:class:`CoarseView`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.models import INR, build_model
from medinr.models.tasks import task_defaults
from medinr.mri.baselines import zero_filled_scale
from medinr.mri.config import COARSE_RATIO, InrReconConfig
from medinr.mri.fft import fftc, ifftc
from medinr.mri.noise import NoiseEstimate
from medinr.mri.operators import SenseOp, coil_mix
from medinr.mri.priors import total_variation, wavelet_l1
from medinr.mri.problem import ReconProblem
from medinr.training.final import FinalStage
from medinr.training.loop import Schedule, TrainResult, fit
from medinr.training.selection import BestIterate, fit_with_holdout
from medinr.training.validators import HeldOutSamples, held_out_residual


def build_recon_model(name: str, ndim: int, shape: tuple[int, ...], options: dict[str, Any]) -> INR:
    """A zoo model with 2 outputs (real, imaginary), with the family's reconstruction defaults."""
    return build_model(name, ndim, 2, **task_defaults(name, "reconstruction", shape, options).options)


def lattice_image(model: INR, shape: tuple[int, ...], active: int | None = None) -> torch.Tensor:
    """The complex image of ``model`` on the lattice of ``shape``, differentiable; the model's capacity levels
    beyond the ``active`` coarsest are off (:meth:`INR.forward_lattice`)."""
    partial = active is not None and active < model.capacity_levels
    return _complex(model.forward_lattice(shape, active) if partial else model.forward_lattice(shape))


def _complex(out: torch.Tensor) -> torch.Tensor:
    """A model's two output channels ``(..., 2)`` as one complex tensor."""
    channels = out.movedim(-1, 0)
    if channels.is_contiguous():  # channel-first memory (mrgrid): take the channels where they lie, no copy
        return torch.complex(channels[0], channels[1])
    return torch.complex(out[..., 0], out[..., 1])


def shift_ramps(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The centring of :func:`medinr.mri.fft.fftc` along an axis of ``n`` as two unit-modulus factors.

    ``fftc(u) = out * fft(u * inp)`` (``inp[i] = exp(2 pi i i c / n)``, ``out[k] = exp(2 pi i c (k - c) / n)``,
    ``c = n // 2``; +-1 for even ``n``): a loss that multiplies ``inp`` into its coil maps and ``conj(out)`` into
    its data once needs no shifts per step, and ``|residual|`` is unchanged sample by sample.
    """
    c, idx = n // 2, torch.arange(n, dtype=torch.float64, device=device)
    inp = torch.exp(2j * np.pi * idx * c / n)
    out = torch.exp(2j * np.pi * c * (idx - c) / n)
    return inp.to(torch.complex64), out.to(torch.complex64)


def _along(vector: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """``vector`` shaped to broadcast along spatial ``axis`` of a ``(C, *grid)`` tensor with ``ndim`` grid axes."""
    return vector.reshape([-1 if a == axis else 1 for a in range(ndim)])


@dataclass
class WhitenedData:
    """The scan in the units the fit works in: whitened k-space (unit noise) and whitened maps for the image
    normalised to a robust maximum of 1 (``image = scale * x``); ``weights``, when given, weigh the samples of
    the data term (density compensation of non-Cartesian samples, :mod:`medinr.mri.noncart_inr`).

    Cartesian data prepared by :meth:`prepare` (as :func:`whiten_data` does) are not fitted through
    ``SenseOp(maps, mask)`` as written: along the axes the mask is constant on (the readout of a line mask) the
    data are taken to image space once (a hybrid space), and the centring of the remaining FFTs is folded into
    the maps and the data (:func:`shift_ramps`). :meth:`residual` is then one un-shifted FFT over the
    undersampled axes; its energy on any set of whole readouts equals that of ``SenseOp(maps, mask)(x) -
    kspace`` (tested), at about 0.6x the CPU time per step. Unprepared data (non-Cartesian) use :meth:`op`.
    """

    kspace: torch.Tensor
    maps: torch.Tensor
    scale: float
    noise: NoiseEstimate
    whitened: bool
    weights: torch.Tensor | None = None
    fft_axes: tuple[int, ...] = ()
    fast_maps: torch.Tensor | None = None
    fast_target: torch.Tensor | None = None

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.maps.shape[1:])

    def op(self, mask: torch.Tensor) -> SenseOp:
        return SenseOp(self.maps, mask)

    def prepare(self, mask: torch.Tensor) -> "WhitenedData":
        """Set up :meth:`residual` for samples within ``mask`` (hybrid along the axes ``mask`` is constant on)."""
        ndim = len(self.grid)
        constant = [a for a in range(ndim) if bool((mask == mask.narrow(a, 0, 1)).all())]
        self.fft_axes = tuple(a for a in range(ndim) if a not in constant)
        target, maps = self.kspace, self.maps
        if constant:
            target = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(target, dim=[a + 1 for a in constant]),
                                                        dim=[a + 1 for a in constant], norm="ortho"),
                                        dim=[a + 1 for a in constant])
        for a in self.fft_axes:
            inp, out = shift_ramps(self.grid[a], maps.device)
            maps, target = maps * _along(inp, a, ndim), target * _along(out.conj(), a, ndim)
        self.fast_maps, self.fast_target = maps.contiguous(), target.contiguous()
        return self

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Whitened prediction minus data ``(C, *grid)`` of image ``x``, in the fit's domain (see the class):
        sample positions as in k-space, hybrid along the fully sampled axes; unprepared: ``op(x) - kspace``."""
        if self.fast_maps is None:  # non-Cartesian: the operator ignores the mask, the weights select
            return self.op(torch.ones(self.kspace.shape[1:], device=x.device)).coil_kspace(x) - self.kspace
        u = self.fast_maps * x
        if self.fft_axes:
            u = torch.fft.fftn(u, dim=[a + 1 for a in self.fft_axes], norm="ortho")
        return u - self.fast_target

    def data_loss(self, x: torch.Tensor, weights: torch.Tensor, voxels: float) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`data_term` of :meth:`residual` ``(x)`` and the residual (detached): prepared Cartesian data take
        :class:`_CartesianDataTerm` (same value and gradient, written out), others autograd."""
        if self.fast_maps is None or not x.is_complex():
            resid = self.residual(x)
            return data_term(resid, weights, voxels), resid.detach()
        return _CartesianDataTerm.apply(x, self.fast_maps, self.fast_target, weights, self.fft_axes, voxels)

    def sample_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """The per-sample weights of the data term on the samples ``mask``, in the fit's domain."""
        out = mask.to(self.maps.real.dtype)
        return out if self.weights is None else out * self.weights

    def coarse(self, mask: torch.Tensor, ratio: float) -> "CoarseView | None":
        """The scan at ``ratio`` of its resolution (:class:`CoarseView`), for the samples ``mask``; None where the
        data are not Cartesian (their operator has no k-space centre to crop) or the grid is too small."""
        if self.fast_maps is None or self.weights is not None or type(self) is not WhitenedData:
            return None
        grid, ndim = self.grid, len(self.grid)
        sizes = [max(1, int(round(n * ratio))) for n in grid]
        if min(sizes) < 8:
            return None
        window = tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(grid, sizes))
        crop = (slice(None), *window)
        # the maps' k-space cropped as the data's: then F_m(maps_m x_m) = crop(F_n(maps x)) for an image x band-limited
        # to the window, x_m its samples every n / m voxels (the orthonormal FFTs' factors cancel)
        maps = ifftc(fftc(self.maps, ndim)[crop], ndim)
        data = WhitenedData(self.kspace[crop].contiguous(), maps, self.scale, self.noise, self.whitened)
        # sample j of the window's image lies at voxel n // 2 + (j - m // 2) n / m of the fine grid
        positions = [n // 2 + (torch.arange(m, dtype=torch.float64, device=self.maps.device) - m // 2) * (n / m)
                     for n, m in zip(grid, sizes)]
        axes = [(-1.0 + 2.0 * p / max(1, n - 1)).float() for p, n in zip(positions, grid)]
        return CoarseView(data.prepare(mask[window]), window, axes, ratio)


@dataclass
class CoarseView:
    """A Cartesian scan at a lower resolution: the centre of its k-space (``ratio`` of each axis, ``window``),
    whose image is the fine image's samples every ``1 / ratio`` voxels, at network coordinates ``axes`` (per axis,
    in the fine grid's units) when the image is band-limited to that window.

    The coarse start of the path (:attr:`medinr.mri.config.RegularisationPath.coarse_fraction`) fits it: while
    the weights are strong the image is smooth, and a quarter of the voxels carry it at a fraction of a step's
    cost."""

    data: WhitenedData
    window: tuple[slice, ...]
    axes: list[torch.Tensor]
    ratio: float

    def image(self, model: INR, active: int) -> torch.Tensor:
        """The complex image of ``model`` at the coarse samples, its ``active`` coarsest levels on."""
        return _complex(model.forward_axes(self.axes, active))


class _CartesianDataTerm(torch.autograd.Function):
    """``sum(w |r|^2) / voxels`` with ``r = F_a (S x) - y`` (:meth:`WhitenedData.residual`, prepared), and ``r``;
    the gradient written out, ``(2 / voxels) S^H F_a^H (w r)`` (``F_a`` the unitary FFT over ``axes``, so its
    adjoint is the inverse). Autograd through the same complex products, FFT and moduli made several coil-sized
    copies and zero fills per step: this took a 256 x 256, 8-coil data term with its gradient from 12-15 ms to 8-9
    on 2 threads."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                axes: tuple[int, ...], voxels: float) -> tuple[torch.Tensor, torch.Tensor]:
        dims = [a + 1 for a in axes]
        u = maps * x
        resid = (torch.fft.fftn(u, dim=dims, norm="ortho") if dims else u).sub_(target)
        weighted = resid * (weights * (2.0 / voxels))  # the gradient with respect to the residual
        loss = (torch.view_as_real(resid) * torch.view_as_real(weighted)).sum() * 0.5
        ctx.save_for_backward(maps, weighted)
        ctx.dims = dims
        ctx.mark_non_differentiable(resid)
        return loss, resid

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _resid: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        maps, weighted = ctx.saved_tensors
        back = torch.fft.ifftn(weighted, dim=ctx.dims, norm="ortho") if ctx.dims else weighted.clone()
        return back.mul_(maps.conj()).sum(0).mul_(grad), None, None, None, None, None


def whiten_data(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, noise: NoiseEstimate,
                whiten: bool) -> WhitenedData:
    """Normalise and whiten with the problem's ``noise``: ``W y`` and ``W S scale`` so that
    ``SenseOp(W S scale) x`` predicts ``W y`` (``W`` the whitening, or ``I / sigma`` without ``whiten``)."""
    scale = zero_filled_scale(SenseOp(maps, mask).H(kspace * mask).abs().cpu().numpy())
    if whiten:
        w = torch.from_numpy(noise.whitening()).to(kspace.device)
    else:
        w = torch.eye(kspace.shape[0], dtype=torch.complex64, device=kspace.device) / noise.sigma
    data = WhitenedData(coil_mix(w, kspace * mask), coil_mix(w, maps) * scale, scale, noise, whiten)
    return data.prepare(mask)


def data_term(residual: torch.Tensor, weights: torch.Tensor, voxels: float) -> torch.Tensor:
    """Weighted residual energy per voxel: ``sum(w |r|^2) / voxels`` (whitened: about the sample count per voxel
    at the noise floor)."""
    return torch.sum((residual.real**2 + residual.imag**2) * weights) / voxels


def prior_term(x: torch.Tensor, tv: float, wavelet: float) -> torch.Tensor | float:
    """The image priors at weights ``tv`` and ``wavelet`` (a zero weight costs nothing)."""
    out: torch.Tensor | float = 0.0
    if tv > 0:
        out = out + tv * total_variation(x)
    if wavelet > 0:
        out = out + wavelet * wavelet_l1(x)
    return out


class PathObjective:
    """The loss of one step of the path on the samples ``mask``: whitened residual energy per voxel plus the
    path's TV and wavelet weights at that step; the residual goes to the validator (``(loss, residual)``).

    ``data`` is a :class:`WhitenedData` (Cartesian, prepared) or a subclass with its own operator
    (non-Cartesian). ``hold`` freezes the weights and the capacity from that step on (a fine-tune keeps the
    chosen weights). The path's coarse start (``path.coarse_fraction``) fits the data's :class:`CoarseView`
    with the model's levels that view resolves, where both exist (Cartesian data, a grid family); its priors
    weigh the view's ratio times the path's weights (see :meth:`__call__`)."""

    def __init__(self, model: INR, data: WhitenedData, mask: torch.Tensor, config: InrReconConfig,
                 hold: int | None = None) -> None:
        self.model, self.data, self.path, self.hold = model, data, config.path, hold
        self.grid = tuple(data.grid)
        self.weights = data.sample_weights(mask)
        self.voxels = float(np.prod(self.grid))
        self.coarse: CoarseView | None = None
        self.coarse_levels = 0
        self.coarse_until = self.path.coarse_steps if hold is None else 0.0
        view = data.coarse(mask, COARSE_RATIO) if self.coarse_until > 0 and model.capacity_levels > 1 else None
        if view is not None:
            self.coarse_levels = model.levels_within(max(len(a) for a in view.axes))
            if self.coarse_levels >= 1:
                self.coarse, self.coarse_weights = view, self.weights[view.window]
                self.coarse_voxels = float(np.prod([len(a) for a in view.axes]))

    def _at(self, step: int) -> int:
        return step if self.hold is None else min(step, self.hold)

    def coarse_record(self) -> dict[str, Any] | None:
        """What metrics.json records of the coarse start: its steps, grid and levels (None: there was none)."""
        if self.coarse is None:
            return None
        return {"steps": self.coarse_until, "grid": [len(a) for a in self.coarse.axes], "levels": self.coarse_levels,
                "of_levels": self.model.capacity_levels}

    def image(self, step: int) -> torch.Tensor:
        return lattice_image(self.model, self.grid, self.path.active_levels(self._at(step), self.model.capacity_levels))

    def residual(self, step: int) -> torch.Tensor:
        return self.data.residual(self.image(step))

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        at = self._at(step)
        if self.coarse is not None and at < self.coarse_until:
            # no residual for the validator: the coarse start lies within its warm-up (else it scores the state)
            x = self.coarse.image(self.model, min(self.coarse_levels,
                                                  self.path.active_levels(at, self.model.capacity_levels)))
            loss, _ = self.coarse.data.data_loss(x, self.coarse_weights, self.coarse_voxels)
            # TV and Haar details per voxel of an image sampled 1 / ratio voxels apart are about 1 / ratio times
            # the fine image's (an edge crosses that many more of its voxels per voxel): the same weights mean ratio
            prior = prior_term(x, self.path.tv(at), self.path.wavelet(at))
            return loss + self.coarse.ratio * prior, None
        x = self.image(step)
        loss, resid = self.data.data_loss(x, self.weights, self.voxels)
        return loss + prior_term(x, self.path.tv(at), self.path.wavelet(at)), resid


def fit_prior(model: INR, prior: torch.Tensor, coords: torch.Tensor, steps: int, lr: float,
              progress: bool = False) -> TrainResult:
    """Fit ``model`` to a prior image (normalised magnitude) as its real channel: NeRP's initialisation."""
    target = torch.stack([prior, torch.zeros_like(prior)], dim=-1)
    return fit(model, lambda step: torch.mean((model(coords) - target) ** 2), steps, lr, progress=progress,
               description="prior fit")


def _initial_model(config: InrReconConfig, geometry: Geometry, prior: np.ndarray | None, seed: int,
                   device: torch.device, progress: bool) -> tuple[INR, float, TrainResult | None]:
    """The model every walk starts from (seeded; fitted to the prior first when one is given), and its rate."""
    torch.manual_seed(seed)
    defaults = task_defaults(config.model, "reconstruction", tuple(geometry.shape), config.model_options)
    model = build_model(config.model, geometry.ndim, 2, **defaults.options).to(device)
    lr = float(config.lr if config.lr is not None else defaults.lr)
    if prior is None:
        return model, lr, None
    p = torch.as_tensor(np.abs(prior), dtype=torch.float32, device=device)
    p = p / max(float(torch.quantile(p.flatten()[:: max(1, p.numel() // 200000)], 0.999)), 1e-12)
    grid = geometry.network_grid(device=device)
    return model, lr, fit_prior(model, p, grid, config.prior_steps, lr, progress)


def held_out_rule(data: WhitenedData, held: torch.Tensor, config: InrReconConfig) -> dict[str, Any]:
    """How the held-out error chooses on this scan: the held-out samples' mean whitened energy (noise variances
    per sample), whether they are noise-dominated, the band of the best-iterate rule and the warm-up fraction of
    the path.

    Where that energy is at most ``config.noise_dominated`` the held-out samples are noise-dominated: the band
    is ``config.tolerance``, no state of the first ``config.noise_dominated_warmup`` of the path is a
    candidate, and the refit walks the path ``config.final.stretch`` times slower. Else the band is 0 (the
    lowest error) after ``config.warmup_fraction``, and the refit keeps the walk's pace. Where it is at most
    ``config.quiet_held_out`` they are also *quiet*: what they add is hardly more than noise, so no final stage
    runs and the walk itself goes slower (:func:`self_calibrate`).

    Lines held out of a Cartesian mask lie outside its calibration region, where the signal is near the noise
    (1.1 on a 256 x 256, 8-coil 4x slice; 0.9-3.7 at 8x): their error then hardly tells two states apart, and
    the band keeps the later, less smoothed one; refitted slower, that state comes nearer the optimum of its
    weights (:data:`medinr.mri.config.REFIT_STRETCH`). Radial spokes all cross the centre of k-space (5700 on the
    dipy slice at 24 spokes): there the lowest error is a real minimum, and the band cost 0.6 dB. The chosen
    state is then the walk's own: a refit 1.5x slower lost 0.04-0.34 dB on four of the six radial cases of
    ``bench/recon_radial.py --quick`` (one gained 0.06) and 0.04 dB on the 3D Poisson case (energy 35).
    """
    with torch.no_grad():
        zero = torch.zeros(tuple(data.grid), dtype=data.maps.dtype, device=data.maps.device)
        energy = float(held_out_residual(data.residual(zero), held))  # a zero image's residual: the data
    quiet = config.quiet_held_out > 0 and energy <= config.quiet_held_out
    if energy <= config.noise_dominated:
        return {"held_out_energy": energy, "noise_dominated": True, "quiet": quiet,
                "tolerance": float(config.tolerance),
                "warmup_fraction": max(float(config.warmup_fraction), float(config.noise_dominated_warmup))}
    return {"held_out_energy": energy, "noise_dominated": False, "quiet": quiet, "tolerance": 0.0,
            "warmup_fraction": float(config.warmup_fraction)}


def still_falling(selection: BestIterate) -> bool:
    """Whether a walk ended with its held-out error at its lowest (no patience stop, the minimum at the last
    point): the path ran out before the held-out data found a best state, and its last state was kept. Noise-free
    simulated k-space does this (the priors should fall further than the path goes); real data stop earlier."""
    points = selection.points
    if len(points) < 2 or selection.exhausted():
        return False
    return points[-1]["validation_error"] <= min(p["validation_error"] for p in points)


def self_calibrate(start: INR, data: WhitenedData, mask: torch.Tensor, held: torch.Tensor, config: InrReconConfig,
                   lr: float, progress: bool = False) -> tuple[INR, dict[str, Any], TrainResult]:
    """Walk the path on the fitting samples, choose the point by the held-out error on ``held``
    (:func:`held_out_rule`), then run the final stage on every sample. Returns ``(model, record, history)``.

    Where the held-out samples are quiet, or the final stage is 'split', the split's chosen state is the result;
    the walk then goes ``config.split_pace`` times slower along the path, so that this state, like a slower
    refit's, is nearer the optimum of its weights."""
    rule = held_out_rule(data, held, config)
    # the refit goes slower where the held-out samples are noise-dominated; quiet ones skip it
    final = FinalStage("split") if rule["quiet"] else replace(
        config.final, stretch=config.final.stretch if rule["noise_dominated"] else 1.0)
    nominal = config.path.steps
    if final.kind == "split" and config.split_pace != 1.0:
        config = replace(config, path=replace(config.path, steps=max(1, round(config.split_pace * nominal))))
    rule["walk_pace"] = config.path.steps / nominal
    path, levels = config.path, start.capacity_levels
    schedule = Schedule(config.schedule, length=path.max_steps)

    walk: list[PathObjective] = []  # the walk's objective, once the walk has started

    def objective_for(model: INR, stage: str) -> PathObjective:
        if stage == "walk":
            walk.append(PathObjective(model, data, mask & ~held, config))
            return walk[-1]
        # a fine-tune keeps the weights the held-out samples chose; a refit walks the path up to that point
        return PathObjective(model, data, mask, config, hold=selection.best_step if stage == "finetune" else None)

    def residual(model: INR, step: int) -> torch.Tensor:  # a state no step's forward pass scored (the last)
        # the walk's own objective where it scores the walked model: no second coarse view, no second record
        objective = walk[-1] if walk and walk[-1].model is model else PathObjective(model, data, mask & ~held, config)
        return objective.residual(step)

    validator = HeldOutSamples(held, config.eval_every, int(rule["warmup_fraction"] * path.steps), residual)
    selection = BestIterate(validator, config.patience, describe=lambda step: path.at(step, levels),
                            tolerance=rule["tolerance"])
    outcome = fit_with_holdout(start, objective_for, path.max_steps, lr, schedule, selection, final,
                               progress=progress, description="reconstruct")
    falling = still_falling(selection)
    record = {"validation_curve": selection.points, "chosen": selection.best_point,
              "held_out_rule": rule, "walk_ended_improving": falling,
              "walk_steps": outcome.walk.steps, "final": outcome.description,
              "coarse_start": walk[0].coarse_record() if walk else None}
    if rule["quiet"]:
        record["final"] += (f" (no refit: the held-out samples are quiet, energy {rule['held_out_energy']:.2f} <= "
                            f"{config.quiet_held_out:g} noise variances)")
    if rule["walk_pace"] != 1.0:
        record["final"] += f"; the walk went {rule['walk_pace']:g}x slower along the path"
    if falling:
        warnings.warn(f"the held-out error was still falling where the regularisation path ended (step "
                      f"{selection.points[-1]['step']}; typical of noise-free simulated k-space): that last state "
                      f"is kept, and a longer path (--steps {2 * nominal}) may do better", UserWarning, stacklevel=2)
    history = outcome.history
    history.stages = {"walk": outcome.walk.timing()}
    if outcome.final is not None:
        history.stages["final"] = outcome.final.timing()
    return outcome.model, record, history


def _check_shapes(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, grid: tuple[int, ...]) -> None:
    if tuple(kspace.shape[1:]) != grid or tuple(maps.shape) != tuple(kspace.shape) or tuple(mask.shape) != grid:
        raise MedinrError(
            f"k-space {tuple(kspace.shape)}, maps {tuple(maps.shape)} and mask {tuple(mask.shape)} do not match "
            f"the grid {grid}"
        )


def _fit(problem: ReconProblem, config: InrReconConfig, prior: np.ndarray | None, seed: int, progress: bool,
         device: torch.device) -> tuple[INR, WhitenedData, dict[str, Any], TrainResult]:
    """Whiten the Cartesian data, then :func:`fit_whitened`."""
    kspace, maps, mask = problem.tensors(device)
    mask = mask.bool()
    _check_shapes(kspace, maps, mask, tuple(problem.geometry.shape))
    data = whiten_data(kspace, maps, mask, problem.noise, config.whiten)
    held = torch.from_numpy(problem.split.held).to(device)
    model, info, history = fit_whitened(data, mask, held, problem.geometry, config, prior, seed, progress, device)
    return model, data, info, history


def fit_whitened(data: WhitenedData, mask: torch.Tensor, held: torch.Tensor, geometry: Geometry,
                 config: InrReconConfig, prior: np.ndarray | None, seed: int, progress: bool, device: torch.device
                 ) -> tuple[INR, dict[str, Any], TrainResult]:
    """Build the model (fitted to the prior first), then self-calibrate on the split ``mask`` / ``held``, or walk
    the whole path when there is nothing to hold out. Any operator: ``data.op(mask)`` gives the model's samples
    (a Cartesian grid, or a trajectory's readouts, :mod:`medinr.mri.noncart_inr`), ``mask`` and ``held`` index
    them."""
    start, lr, prior_fit = _initial_model(config, geometry, prior, seed, device, progress)
    if config.holdout_fraction > 0 and bool(held.any()):
        model, info, history = self_calibrate(start, data, mask, held, config, lr, progress)
    else:
        info = {"self_calibration": "off: whole path walked on every sample" if config.holdout_fraction <= 0
                else "no samples to hold out: whole path walked"}
        objective = PathObjective(start, data, mask, config)
        info["coarse_start"] = objective.coarse_record()
        history = fit(start, objective, config.path.steps, lr, Schedule(config.schedule, length=config.path.max_steps),
                      progress=progress, description="reconstruct")
        history.stages = {"walk": history.timing()}
        model = start
    if prior_fit is not None:
        history.stages = {"prior": prior_fit.timing(), **history.stages}
    return model, info, history


def inr_reconstruct(
    problem: ReconProblem,
    config: InrReconConfig,
    prior: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> ContinuousImage:
    """Reconstruct a complex image from undersampled multi-coil k-space with a self-calibrated INR.

    Parameters
    ----------
    problem : ReconProblem
        The k-space, mask, coil maps and grid; its noise estimate and held-out split are used when it has them
        (:meth:`ReconProblem.prepared`), drawn here from ``config.holdout_fraction`` and ``seed`` otherwise.
    config : InrReconConfig
    prior : ndarray ``grid``, optional
        A magnitude image of the same anatomy on the same grid (NeRP prior).
    seed : int
        Seeds the model (and the split when the problem has none): the same seed gives the same choices.
    progress : bool
        A progress bar per fit stage.
    device : str or torch.device

    Returns
    -------
    ContinuousImage
        A complex image in the units of the k-space (the orthonormal FFT keeps them); ``extra`` holds the
        settings, the noise estimate, the split, the validation curve and every choice; ``history`` the fit
        (each stage timed in ``history.stages``).
    """
    if problem.noise is None or problem.split is None:
        problem = problem.prepared(config.holdout_fraction if config.holdout_fraction > 0 else 0.1, seed)
    model, data, info, history = _fit(problem, config, prior, seed, progress, torch.device(device))
    return reconstruction_image(model, data, problem, config, info, history)


def reconstruction_image(model: INR, data: WhitenedData, problem: Any, config: InrReconConfig,
                         info: dict[str, Any], history: TrainResult) -> ContinuousImage:
    """The fitted model as a complex :class:`ContinuousImage` with the record of its fit (settings, noise estimate,
    split, choices): what both the Cartesian and the non-Cartesian reconstruction return."""
    model.eval()
    extra: dict[str, Any] = {
        "pipeline": "reconstruct",
        "inr": config.to_dict(),
        "noise": {**data.noise.to_dict(), "whitened": data.whitened},
        "split": problem.split.describe(),
        **info,
    }
    output = OutputMeaning("complex", scale=data.scale)
    return ContinuousImage(model, problem.geometry, output, "network", extra=extra, history=history)


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
