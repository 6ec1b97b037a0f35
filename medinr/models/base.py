"""The interface every INR family shares: coordinates ``(..., d)`` in [-1, 1] -> channels ``(..., c)``."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from medinr.errors import MedinrError

MODEL_REGISTRY: dict[str, type["INR"]] = {}


def register_model(name: str) -> Callable[[type["INR"]], type["INR"]]:
    """Class decorator that makes a family available to :func:`build_model` under ``name``."""

    def wrap(cls: type["INR"]) -> type["INR"]:
        MODEL_REGISTRY[name] = cls
        cls.family = name
        return cls

    return wrap


class INR(nn.Module):
    """Base class of every implicit neural representation in medinr.

    Subclasses take ``in_features`` and ``out_features`` plus their own keyword options, call
    ``super().__init__(in_features, out_features, **options)`` so that the options are recorded in
    :attr:`config`, and implement :meth:`forward` on coordinates of shape ``(..., in_features)`` in
    [-1, 1] returning ``(..., out_features)``. The recorded config rebuilds the same architecture
    (``build_model(model.family, **model.config)``), which is how checkpoints are loaded.
    """

    family: str = "inr"
    #: True for families whose output at a point depends on a fixed lattice (Conv-INR): they are trained on
    #: the full lattice and sampled elsewhere by interpolation.
    lattice_bound: bool = False
    #: Default Adam learning rate for this family when fitting images.
    default_lr: float = 1e-3

    def __init__(self, in_features: int, out_features: int, **options: Any) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.config: dict[str, Any] = {"in_features": self.in_features, "out_features": self.out_features, **options}

    def regularization(self) -> torch.Tensor | None:
        """An optional model-specific penalty to add to the loss (e.g. KAN sparsification)."""
        return None

    @torch.no_grad()
    def evaluate(self, coords: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Evaluate without gradients in chunks of ``chunk`` coordinates so that memory stays bounded."""
        was_training = self.training
        self.eval()
        try:
            flat = coords.reshape(-1, coords.shape[-1])
            parts = [self(flat[s : s + chunk]) for s in range(0, flat.shape[0], chunk)]
            out = torch.cat(parts, dim=0) if parts else flat.new_zeros(0, self.out_features)
            return out.reshape(*coords.shape[:-1], self.out_features)
        finally:
            self.train(was_training)

    def param_groups(self, base_lr: float) -> list[dict]:
        """Adam parameter groups; families whose parts want different rates (hash tables) override this."""
        return [{"params": list(self.parameters()), "lr": base_lr}]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(name: str, in_features: int, out_features: int, **options: Any) -> INR:
    """Build a model of family ``name`` (see :data:`MODEL_REGISTRY`) from a plain config."""
    if name not in MODEL_REGISTRY:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise MedinrError(f"unknown model '{name}'; choose one of: {known}")
    try:
        return MODEL_REGISTRY[name](in_features=in_features, out_features=out_features, **options)
    except TypeError as exc:
        raise MedinrError(f"bad options for model '{name}': {exc}") from None
