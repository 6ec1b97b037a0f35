"""The interface every INR family shares: coordinates ``(..., d)`` in [-1, 1] -> channels ``(..., c)``.

Besides ``forward``, a family states explicitly what the rest of medinr needs from it (no duck typing):
its typed config (options with ranges, defaults per task: :mod:`medinr.models.config`), the config of one
model (recorded once, from the constructor's arguments), Adam parameter groups, how to start at a zero
output (registration's identity), and how to evaluate on a whole lattice. Chunked evaluation lives here
and nowhere else.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medinr.errors import MedinrError
from medinr.models.config import FamilyConfig, TaskDefaults
from medinr.validation import checked_build

MODEL_REGISTRY: dict[str, type["INR"]] = {}

#: Coordinates per forward call: 2k-16k is fastest on CPU (cache) and keeps memory bounded.
DEFAULT_CHUNK = 16384


def register_model(name: str) -> Callable[[type["INR"]], type["INR"]]:
    """Class decorator that makes a family available to :func:`build_model` under ``name``.

    The family must name its typed config (:attr:`INR.config_type`): that is where its options are checked from.
    """

    def wrap(cls: type["INR"]) -> type["INR"]:
        config = getattr(cls, "config_type", None)
        if not (isinstance(config, type) and issubclass(config, FamilyConfig) and config is not FamilyConfig):
            raise TypeError(f"model family '{name}' must declare config_type, a FamilyConfig subclass")
        MODEL_REGISTRY[name] = cls
        cls.family = name
        return cls

    return wrap


def _record_config(init: Callable) -> Callable:
    """Wrap a family's ``__init__`` so that its bound arguments become :attr:`INR.config` (once, outermost call)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: "INR", *args: Any, **kwargs: Any) -> None:
        outermost = not getattr(self, "_recording_config", False)
        if outermost:
            object.__setattr__(self, "_recording_config", True)
        try:
            init(self, *args, **kwargs)
        finally:
            if outermost:
                object.__setattr__(self, "_recording_config", False)
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            recorded = {k: _plain(v) for k, v in list(bound.arguments.items())[1:]}
            # a family may resolve options in __init__ (e.g. KAN encoding defaults): its own entries win
            recorded.update(self.__dict__.get("_resolved_config", {}))
            self.config = recorded

    return wrapped


def _plain(value: Any) -> Any:
    """Tuples become lists so that a config survives a JSON round trip unchanged."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class INR(nn.Module):
    """Base class of every implicit neural representation in medinr.

    Subclasses take ``in_features`` and ``out_features`` plus their own keyword options and implement
    :meth:`forward` on coordinates of shape ``(..., in_features)`` in [-1, 1] returning
    ``(..., out_features)``. Their constructor arguments are recorded in :attr:`config` automatically
    (``build_model(model.family, **model.config)`` rebuilds the same architecture, which is how checkpoints
    load); options a family resolves itself go through :meth:`resolve_config`.

    Hooks every family implements or inherits: :meth:`zero_output_`, :meth:`param_groups`,
    :meth:`forward_lattice`, :meth:`regularization`.
    """

    family: str = "inr"
    #: True for families whose output at a point depends on a fixed lattice (Conv-INR): they are trained on
    #: the full lattice and sampled elsewhere by interpolation.
    lattice_bound: bool = False
    #: The family's typed config: every constructor option with its type, range, units and doc, and the
    #: defaults per task (:meth:`for_task`). Each registered family declares its own.
    config_type: ClassVar[type[FamilyConfig]] = FamilyConfig
    #: True for families whose :meth:`forward_axes` on a whole separable lattice costs far less than
    #: :meth:`forward` at the same points (dense feature grids): image fits then take full-grid steps.
    separable: ClassVar[bool] = False
    #: True for families whose feature grids train by block when an image fit takes tiles of a large volume
    #: (:mod:`medinr.training.blocks`): the grid families. Not the ``lattice`` family, whose voxel values alone
    #: then fitted worse (the 48^3 crop of bench/models.py at 2x zoom: 27.07 dB instead of 28.29; mrgrid 32.72
    #: instead of 32.65, the KAN 32.73 instead of 32.77).
    block_updates: ClassVar[bool] = False

    @property
    def footprint_lattice(self) -> bool:
        """True when image fits evaluate whole footprint lattices through :meth:`forward_axes` (a separable family
        that is not lattice-bound)."""
        return bool(self.separable) and not self.lattice_bound

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_config(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if int(in_features) < 1 or int(out_features) < 1:
            raise MedinrError(f"a model needs positive in/out features, got {in_features} -> {out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.config: dict[str, Any] = {"in_features": self.in_features, "out_features": self.out_features}
        self._compiled: Any = None

    def resolve_config(self, **options: Any) -> None:
        """Record options the family resolved itself (e.g. filled-in defaults) in place of the raw arguments."""
        self.__dict__.setdefault("_resolved_config", {}).update({k: _plain(v) for k, v in options.items()})
        if hasattr(self, "config"):
            self.config.update(self._resolved_config)

    # -- hooks -------------------------------------------------------------------------------------------
    def regularization(self) -> torch.Tensor | None:
        """An optional model-specific penalty to add to the loss (e.g. KAN sparsification)."""
        return None

    def param_groups(self, base_lr: float) -> list[dict]:
        """Adam parameter groups; families whose parts want different rates (hash tables) override this."""
        return [{"params": list(self.parameters()), "lr": base_lr}]

    @classmethod
    def for_task(cls, task: str, shape: Sequence[int], options: dict[str, Any] | None = None) -> TaskDefaults:
        """The family's defaults for ``task`` ('image', 'reconstruction' or 'deformation') on grid ``shape``:
        build options (the caller's ``options`` on top), Adam base rate and image prior weight. See
        :meth:`medinr.models.config.FamilyConfig.for_task`."""
        return cls.config_type.for_task(task, shape, options)

    def training_progress(self, fraction: float) -> bool:
        """Told by a fitting loop, before each step, the fraction of its steps done (0 .. 1).

        Families with a coarse-to-fine schedule act on it (the KAN's grid extension). Returns True when
        parameters were replaced, so that the loop rebuilds its optimiser (:func:`medinr.fit.fit` does).
        """
        return False

    def zero_output_(self) -> None:
        """Make the output exactly zero everywhere while keeping the network trainable (identity start of u).

        Every family overrides this; the base class refuses rather than guess which layer is last.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement zero_output_()")

    @property
    def capacity_levels(self) -> int:
        """Levels of capacity a coarse-to-fine schedule can switch on one by one (1: the family has none)."""
        return 1

    def forward_lattice(self, shape: Sequence[int], active_levels: int | None = None) -> torch.Tensor:
        """The output at every point of the lattice ``shape`` (``linspace(-1, 1, n)`` per axis): ``(*shape, C)``.

        Differentiable. ``active_levels`` keeps only the coarsest of :attr:`capacity_levels` on (None: all); a
        family with a single level ignores it. Families with a faster path on a full lattice (dense grids,
        Conv-INR) override this.
        """
        return self(lattice_coords(shape, self.device))

    def levels_within(self, nodes: int) -> int:
        """How many of the coarsest :attr:`capacity_levels` have at most ``nodes`` vertices per axis: the levels a
        lattice of ``nodes`` points per axis samples without skipping vertices. Families without levels: 1."""
        return 1

    def forward_axes(self, axes: Sequence[torch.Tensor], active_levels: int | None = None) -> torch.Tensor:
        """The output at every point of the separable lattice ``axes[0] x axes[1] (x axes[2])`` of network
        coordinates (any spacing, also outside [-1, 1]): ``(M_0, ..., C)``. Differentiable.

        Families with a per-axis path (:attr:`separable`) override this; here it is :meth:`forward` at the points.
        ``active_levels`` as in :meth:`forward_lattice` (a family with a single level ignores it).
        """
        from medinr.models.separable import lattice_points

        return self(lattice_points([x.to(self.device) for x in axes]))

    # -- evaluation --------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def eval_chunk(self) -> int:
        """Coordinates per forward call of :meth:`evaluate` (and of rendering) by default."""
        return DEFAULT_CHUNK

    @torch.no_grad()
    def evaluate(self, coords: torch.Tensor, chunk: int | None = None, compile: bool = False) -> torch.Tensor:
        """Evaluate without gradients in chunks of ``chunk`` coordinates (default :attr:`eval_chunk`) so that memory
        stays bounded.

        With ``compile=True`` the forward runs through ``torch.compile`` (compiled once per model for the one
        chunk shape: the last chunk is padded; eager fallback on failure).
        """
        chunk = self.eval_chunk if chunk is None else int(chunk)
        was_training = self.training
        self.eval()
        try:
            flat = coords.reshape(-1, coords.shape[-1]).to(self.device)
            forward = self._compiled_forward() if compile and not self.lattice_bound else self
            parts = []
            for s in range(0, flat.shape[0], chunk):
                part = flat[s : s + chunk]
                n = part.shape[0]
                if forward is not self and n < chunk:  # a short last chunk would trigger a recompile
                    part = torch.cat([part, part.new_zeros(chunk - n, part.shape[1])])
                parts.append(forward(part)[:n])
            out = torch.cat(parts, dim=0) if parts else flat.new_zeros(0, self.out_features)
            return out.reshape(*coords.shape[:-1], self.out_features)
        finally:
            self.train(was_training)

    def _compiled_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._compiled is None:
            from medinr.models.compile import CompiledForward

            self._compiled = CompiledForward(self, dynamic=False)
        return self._compiled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lattice_coords(shape: Sequence[int], device: str | torch.device = "cpu") -> torch.Tensor:
    """Network coordinates of a lattice: ``(*shape, d)``, ``linspace(-1, 1, n)`` per axis (0 for a single point)."""
    axes = [
        torch.linspace(-1.0, 1.0, int(n), device=device) if int(n) > 1 else torch.zeros(1, device=device)
        for n in shape
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def zero_linear_(layer: nn.Linear) -> None:
    """Zero a linear layer's weight and bias (the last layer of a family that starts at zero output)."""
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


def build_model(name: str, in_features: int, out_features: int, **options: Any) -> INR:
    """Build a model of family ``name`` (see :data:`MODEL_REGISTRY`) from a plain config.

    Options are checked against the family's typed config (names, types, ranges: ``config_type``) and the
    weights counted against the memory budget before they are allocated (:func:`medinr.validation.checked_build`).
    """
    if name not in MODEL_REGISTRY:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise MedinrError(f"unknown model '{name}'; choose one of: {known}")
    try:
        return checked_build(MODEL_REGISTRY[name], in_features, out_features, options)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise MedinrError(f"bad options for model '{name}': {exc}") from None
