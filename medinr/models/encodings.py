"""Input encodings (Gaussian Fourier features, multiresolution hash grid) and the MLP families built on them.

The encodings are plain modules with an ``out_features`` attribute so that any network (an MLP here, a KAN in
:mod:`medinr.models.kan`) can sit behind them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from medinr.errors import MedinrError
from medinr.models.base import INR, register_model, zero_linear_
from medinr.models.config import FamilyConfig, option
from medinr.models.separable import channel_first_mlp, interpolate_axes, lattice_points

# instant-NGP's spatial-hash primes; the first is 1 so that the hash is coherent along the first axis.
_PRIMES = (1, 2654435761, 805459861)


class FourierEncoding(nn.Module):
    """Gaussian random Fourier features ``[cos(2 pi B x), sin(2 pi B x)]`` (Tancik et al., 2020).

    Parameters
    ----------
    in_features : int
        Coordinate dimension ``d``.
    n_frequencies : int
        Number of random frequencies (rows of ``B``); the output has ``2 * n_frequencies`` features
        (plus ``in_features`` with ``include_input``).
    sigma : float
        Standard deviation of the entries of ``B``, in cycles per unit of network coordinate (the image spans
        2 units, so ``sigma`` cycles per unit is ``2 * sigma`` cycles across the field of view).
    seed : int
        Seed of the generator that draws ``B``. ``B`` is also a buffer of the state dict, so a checkpoint
        restores it exactly; the seed makes a model rebuilt from its config alone draw the same ``B`` too.
    include_input : bool
        Append the raw coordinates to the features.
    """

    def __init__(
        self,
        in_features: int,
        n_frequencies: int = 128,
        sigma: float = 10.0,
        seed: int = 0,
        include_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.n_frequencies = int(n_frequencies)
        self.sigma = float(sigma)
        self.include_input = bool(include_input)
        generator = torch.Generator().manual_seed(int(seed))
        B = torch.randn(self.n_frequencies, self.in_features, generator=generator) * self.sigma
        self.register_buffer("B", B)
        self.out_features = 2 * self.n_frequencies + (self.in_features if self.include_input else 0)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        phase = (2.0 * math.pi) * (coords @ self.B.T)
        parts = [torch.cos(phase), torch.sin(phase)]
        if self.include_input:
            parts.append(coords)
        return torch.cat(parts, dim=-1)


class HashGridEncoding(nn.Module):
    """Multiresolution hash-grid encoding (Mueller et al., instant-NGP, 2022) in plain torch.

    Level ``l`` covers [-1, 1]^d with a lattice of ``N_l`` cells per axis, ``N_l`` growing geometrically from
    ``base_resolution`` to ``max_resolution``. Each lattice vertex owns ``features_per_level`` trainable
    features; a point gets the (bi/tri)linear interpolation of the features at the corners of its cell.
    Levels whose ``(N_l + 1)^d`` vertices fit in ``2**log2_table_size`` entries are indexed densely (no
    collisions); finer levels share a table of that size through the spatial hash
    ``XOR_i(c_i * prime_i) mod 2**log2_table_size``. Tables start at U(-1e-4, 1e-4).

    Parameters
    ----------
    in_features : int
        2 or 3.
    levels : int
        Number of resolution levels.
    features_per_level : int
        Features stored per vertex; ``out_features = levels * features_per_level``.
    log2_table_size : int
        Log2 of the largest number of entries of one level.
    base_resolution, max_resolution : int
        Cells per axis of the coarsest and finest level over [-1, 1].

    Notes
    -----
    Coordinates outside [-1, 1] are clamped to the border. The tables want a learning rate around 1e-2, ten
    times an MLP's: the families below expose :meth:`param_groups` for that.
    """

    def __init__(
        self,
        in_features: int,
        levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 256,
    ) -> None:
        super().__init__()
        if in_features not in (1, 2, 3):
            raise ValueError(f"HashGridEncoding supports 1 to 3 input dimensions, got {in_features}")
        self.in_features = int(in_features)
        self.levels = int(levels)
        self.features_per_level = int(features_per_level)
        self.log2_table_size = int(log2_table_size)
        self.base_resolution = int(base_resolution)
        self.max_resolution = int(max_resolution)
        self.out_features = self.levels * self.features_per_level

        d = self.in_features
        growth = math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / max(1, self.levels - 1))
        table_cap = 2**self.log2_table_size
        resolutions, sizes, hashed = [], [], []
        for level in range(self.levels):
            res = int(math.floor(self.base_resolution * growth**level + 1e-6))
            dense = (res + 1) ** d
            resolutions.append(res)
            sizes.append(min(dense, table_cap))
            hashed.append(dense > table_cap)
        offsets = [0]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + s)
        # Integer lattice bookkeeping as buffers so that it follows the module to any device.
        self.register_buffer("resolution", torch.tensor(resolutions, dtype=torch.int64), persistent=False)
        self.register_buffer("size", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("offset", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        self.register_buffer("hashed", torch.tensor(hashed, dtype=torch.bool), persistent=False)
        strides = torch.tensor([[(r + 1) ** i for i in range(d)] for r in resolutions], dtype=torch.int64)
        self.register_buffer("stride", strides, persistent=False)  # (L, d) dense row-major-like strides
        self.register_buffer("primes", torch.tensor(_PRIMES[:d], dtype=torch.int64), persistent=False)
        self._layout = list(zip(resolutions, sizes, offsets))  # as Python ints: no device round trip per level
        # levels grow in resolution, so the dense ones are the first _n_dense
        self._n_dense = sum(1 for h in hashed if not h)
        assert not any(hashed[: self._n_dense]), "dense levels must precede hashed ones"
        self.table = nn.Parameter(torch.empty(sum(sizes), self.features_per_level).uniform_(-1e-4, 1e-4))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        x = coords.reshape(-1, self.in_features)
        unit = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5).to(self.table.dtype)  # (N, d) in [0, 1]
        pos = unit[:, None, :] * self.resolution.to(unit.dtype)[None, :, None]  # (N, L, d) in cell units
        # The last cell is closed on the right so that x = +1 interpolates inside the lattice.
        cell = torch.minimum(pos.floor().long(), (self.resolution - 1)[None, :, None])
        frac = pos - cell.to(pos.dtype)  # (N, L, d)
        # Index and weight of a corner are sums / XORs / products of one term per axis, so they are built from
        # (low, high) pairs per axis instead of a (N, L, 2^d, d) vertex tensor: about a third fewer operations.
        # Dense levels come first (coarse), hashed ones after, so each kind is computed only where it applies.
        idx_parts = []
        if self._n_dense:
            stride = self.stride[None, : self._n_dense]
            low = cell[:, : self._n_dense] * stride
            idx_parts.append(_corner_combine(torch.stack((low, low + stride), -1), torch.add))
        if self._n_dense < self.levels:
            primes = self.primes[None, None]
            low = cell[:, self._n_dense :] * primes
            hashed = _corner_combine(torch.stack((low, low + primes), -1), torch.bitwise_xor)
            idx_parts.append(torch.bitwise_and(hashed, (1 << self.log2_table_size) - 1))  # mod a power of two
        idx = (idx_parts[0] if len(idx_parts) == 1 else torch.cat(idx_parts, 1)) + self.offset[None, :, None]
        weight = _corner_combine(torch.stack((1 - frac, frac), -1), torch.mul)  # (N, L, 2^d)
        # index_select's backward (index_add) is several times faster on CPU than embedding's sorted backward.
        feats = self.table.index_select(0, idx.reshape(-1)).reshape(*idx.shape, self.features_per_level)
        out = (weight.unsqueeze(-1) * feats).sum(2)  # (N, L, F)
        return out.reshape(*lead, self.out_features)

    def level_lattice(self, level: int) -> torch.Tensor:
        """A dense level's table as its vertex lattice ``(F, r_0, ..., r_{d-1})`` (a view: axis 0 varies fastest
        in the table)."""
        cells, size, start = self._layout[level]
        r = cells + 1
        block = self.table[start : start + size].reshape(*([r] * self.in_features), self.features_per_level)
        return block.permute(self.in_features, *range(self.in_features - 1, -1, -1))

    def forward_axes(self, axes: Sequence[torch.Tensor]) -> torch.Tensor:
        """The encoding on the separable lattice ``axes``, channel first: ``(L F, M_0, ...)``, level-major as
        :meth:`forward`. Dense levels are interpolated one axis at a time; with any hashed level (3D) every
        point goes through :meth:`forward`."""
        if self._n_dense < self.levels:
            points = lattice_points([x.to(self.table.device) for x in axes])
            return self(points).movedim(-1, 0)
        return torch.cat([interpolate_axes(self.level_lattice(level), axes) for level in range(self.levels)], 0)


def _corner_combine(per_axis: torch.Tensor, op) -> torch.Tensor:
    """Combine per-axis (low, high) terms ``(N, L, d, 2)`` over the 2^d corners of a cell -> ``(N, L, 2^d)``."""
    out = per_axis[:, :, 0, :]
    for axis in range(1, per_axis.shape[2]):
        out = op(out[..., :, None], per_axis[:, :, axis, None, :]).flatten(-2)
    return out


def relu_mlp(n_in: int, hidden: int, layers: int, n_out: int) -> nn.Sequential:
    """``layers`` ReLU layers of width ``hidden`` then a linear head.

    The ReLUs work in place: each follows a linear layer, whose output nothing else holds and whose backward does
    not need it, so the values and gradients are the same (bit for bit) without a new activation per layer. An
    exact 910 x 606 frame of the sample's ``mrgrid``, 2 threads, interleaved runs: 3-6 % faster with the heap
    settings of :func:`medinr.runtime.configure_allocator` (the commands' and the viewer's), 20 % without them.
    """
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


# -- typed configs ------------------------------------------------------------------------------------------------
def _hidden() -> int:
    return option(256, 1, 1 << 16, units="units", doc="width of every ReLU layer")


def _layers(default: int) -> int:
    return option(default, 0, 256, doc="ReLU layers of the MLP (0: a linear decoder)")


@dataclass(frozen=True)
class FourierEncodingConfig(FamilyConfig):
    """Options of :class:`FourierEncoding` (the KAN's ``encoding_options`` for ``encoding='fourier'``)."""

    n_frequencies: int = option(128, 1, 1 << 16, doc="random frequencies (2 features each)")
    sigma: float = option(10.0, 0, 1e4, units="cycles per network unit", doc="standard deviation of the frequencies")
    seed: int = option(0, 0, (1 << 31) - 1, doc="seed of the frequency matrix")
    include_input: bool = option(False, doc="append the raw coordinates to the features")


@dataclass(frozen=True)
class HashEncodingConfig(FamilyConfig):
    """Options of :class:`HashGridEncoding` (the KAN's ``encoding_options`` for ``encoding='hashgrid'``)."""

    levels: int = option(16, 1, 64, doc="resolution levels")
    features_per_level: int = option(2, 1, 64, doc="features stored per vertex and level")
    log2_table_size: int = option(19, 1, 30, units="log2 entries", doc="largest table of one level")
    base_resolution: int = option(16, 1, 1 << 16, units="cells per axis", doc="coarsest level")
    max_resolution: int = option(256, 1, 1 << 16, units="cells per axis", doc="finest level")

    @classmethod
    def check_values(cls, values: Mapping[str, Any], prefix: str = "") -> None:
        """Levels grow from coarse to fine: a coarsest level finer than the finest is refused (the dense levels
        must precede the hashed ones)."""
        if values["base_resolution"] > values["max_resolution"]:
            raise MedinrError(
                f"model option '{prefix}base_resolution' ({values['base_resolution']}) must not exceed "
                f"'{prefix}max_resolution' ({values['max_resolution']}): levels grow from coarse to fine")


def coarse_below_fine(options: Mapping[str, Any], finest: Any, base_default: int) -> dict[str, Any]:
    """``{'base_resolution': finest}`` when the default coarsest level would be finer than ``finest`` (a grid of
    fewer than ``base_default`` cells) and the caller did not choose one; else nothing."""
    if "base_resolution" in options or not isinstance(finest, int) or finest >= base_default:
        return {}
    return {"base_resolution": max(1, finest)}


@dataclass(frozen=True)
class FourierConfig(FamilyConfig):
    """The ``fourier`` family's options and its defaults per task."""

    n_frequencies: int = option(128, 1, 1 << 16, doc="random frequencies (2 features each)")
    sigma: float = option(8.0, 0, 1e4, units="cycles per network unit",
                          doc="standard deviation of the frequencies (higher: finer detail, noisier)")
    hidden: int = _hidden()
    layers: int = _layers(3)
    seed: int = option(0, 0, (1 << 31) - 1, doc="seed of the frequency matrix")

    RATES: ClassVar[dict[str, float]] = {"image": 1e-3, "reconstruction": 1e-3, "deformation": 1e-3}
    SMOOTHNESS: ClassVar[float] = 0.1  # as SIREN: an MLP of features is smooth enough to want a firm prior
    #: As SIREN (:attr:`SirenConfig.POINT_BATCH`): 2x zoom (``bench/models.py``'s cases, one session), 32768 ->
    #: 8192 points a step at the same points drawn: dipy coronal 32.50 -> 35.02 dB (cubic 37.14), MNI axial 28.88 ->
    #: 31.74 (33.28), robex coronal 24.82 -> 25.44 (25.43), the 3D crop 15.15 -> 16.55 (31.75), all with the earlier
    #: 64 frequencies of sigma 4, which under-fitted (training PSNR 15-40 dB; the options now: :meth:`task_options`).
    POINT_BATCH: ClassVar[int | None] = 1 << 13

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: a 2 x 128 MLP behind 512 frequencies of sigma 6 in 2D, 1024 of sigma 4 in 3D.

        Chosen at 2x zoom against cubic interpolation (``bench/models.py``'s cases, 8192 points a step). The
        earlier 64 frequencies of sigma 4 under-fitted (training PSNR 38-40 dB in 2D, 26 in 3D): dipy coronal
        -2.12 dB, MNI axial -1.48, the 3D crop -15.2. In 2D, on dipy / MNI axial: sigma 8 -2.84 dB (mean), 16
        -11.4 (noisy between the samples); 256 frequencies of sigma 4 / 6 / 8: -0.07 / -0.13 / -0.32; 512 of
        sigma 6: +0.25, and over the six slices median +0.25, worst -0.10 (robex 2 mm) at 3.5x the time. On the 3D
        crop: 512 of sigma 6 -9.2 (training 26 dB), of sigma 4 -3.8; 1024 of sigma 4 -1.96; a 3 x 256 MLP behind 512
        of sigma 4 -1.86 at 1.2x the time of the 1024 frequencies."""
        if task != "image":
            return {}
        frequencies, sigma = (512, 6.0) if len(shape) == 2 else (1024, 4.0)
        return {"n_frequencies": frequencies, "sigma": sigma, "hidden": 128, "layers": 2}


@dataclass(frozen=True)
class HashGridConfig(HashEncodingConfig):
    """The ``hashgrid`` family's options (the hash encoding's and its MLP's) and its defaults per task."""

    hidden: int = option(64, 1, 1 << 16, units="units", doc="width of every ReLU layer")
    layers: int = _layers(2)
    table_lr_scale: float = option(10.0, 0, 1e4, low_open=True, units="x base lr",
                                   doc="learning rate of the hash tables (instant-NGP wants ~1e-2)")

    RATES: ClassVar[dict[str, float]] = {"image": 1e-3, "reconstruction": 1e-3, "deformation": 1e-3}
    SMOOTHNESS: ClassVar[float] = 1e-2
    PRIOR: ClassVar[str] = "tv"

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: the finest level has twice the image's largest axis in cells; in 3D a 2^18 table (4.7 M
        parameters rather than 9 M for ~1 M samples). Reconstruction: 8 levels x 2 features from 16 cells to
        the grid's largest axis, a 2 x 64 MLP. On grids finer than the coarsest default level, it follows."""
        if task == "image":
            out = {"max_resolution": 2 * max(shape), **({"log2_table_size": 18} if len(shape) == 3 else {})}
        elif task == "reconstruction":
            out = {"levels": 8, "features_per_level": 2, "base_resolution": 16, "hidden": 64, "layers": 2,
                   "max_resolution": max(shape)}
        else:
            return {}
        finest = options.get("max_resolution", out["max_resolution"])
        return {**out, **coarse_below_fine(options, finest, out.get("base_resolution", 16))}


@register_model("fourier")
class FourierMLP(INR):
    """Gaussian Fourier features followed by a ReLU MLP.

    Parameters
    ----------
    in_features, out_features : int
    n_frequencies : int
        Random frequencies (default 128, i.e. 256 features).
    sigma : float
        Frequency scale in cycles per network unit (default 8; higher fits finer detail but turns noisy).
    hidden, layers : int
        Width and number of ReLU layers (default 256 x 3).
    seed : int
        Seed of the frequency matrix.
    """

    config_type = FourierConfig

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_frequencies: int = 128,
        sigma: float = 8.0,
        hidden: int = 256,
        layers: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__(in_features, out_features)
        self.encoding = FourierEncoding(in_features, n_frequencies, sigma, seed=seed)
        self.mlp = relu_mlp(self.encoding.out_features, hidden, layers, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(coords))

    def zero_output_(self) -> None:
        zero_linear_(self.mlp[-1])


@register_model("hashgrid")
class HashGridMLP(INR):
    """Multiresolution hash-grid encoding followed by a small ReLU MLP (instant-NGP style).

    Parameters
    ----------
    in_features, out_features : int
    levels, features_per_level, log2_table_size, base_resolution, max_resolution : int
        See :class:`HashGridEncoding` (defaults 16, 2, 19, 16, 256). In 2D every level is dense (no collisions,
        0.43 M parameters); in 3D the seven finest levels are hashed and the tables hold 9 M parameters
        (36 MB): lower ``log2_table_size`` for a lighter model on CPU.
    hidden, layers : int
        Width and number of ReLU layers of the MLP (default 64 x 2).
    table_lr_scale : float
        The hash tables train at ``table_lr_scale`` times the base learning rate (see :meth:`param_groups`).
    """

    config_type = HashGridConfig
    separable = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 256,
        hidden: int = 64,
        layers: int = 2,
        table_lr_scale: float = 10.0,
    ) -> None:
        super().__init__(in_features, out_features)
        self.table_lr_scale = float(table_lr_scale)
        self.encoding = HashGridEncoding(
            in_features, levels, features_per_level, log2_table_size, base_resolution, max_resolution
        )
        self.mlp = relu_mlp(self.encoding.out_features, hidden, layers, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(coords))

    def forward_axes(self, axes: Sequence[torch.Tensor]) -> torch.Tensor:
        """The output on the separable lattice ``axes``: ``(M_0, ..., C)`` (the decoder channel first)."""
        feats = self.encoding.forward_axes(axes)
        out = channel_first_mlp(self.mlp, feats.reshape(feats.shape[0], -1))
        return out.reshape(self.out_features, *feats.shape[1:]).movedim(0, -1)

    def zero_output_(self) -> None:
        zero_linear_(self.mlp[-1])

    def param_groups(self, base_lr: float) -> list[dict]:
        """Adam groups: the tables at ``table_lr_scale * base_lr``, the MLP at ``base_lr``."""
        return [
            {"params": list(self.encoding.parameters()), "lr": base_lr * self.table_lr_scale},
            {"params": list(self.mlp.parameters()), "lr": base_lr},
        ]
