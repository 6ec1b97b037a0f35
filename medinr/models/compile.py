"""Optional ``torch.compile`` of a model's forward (or any tensor function) with a fallback to eager execution when
compilation fails."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class CompiledForward:
    """Callable ``(*args) -> model(*args)`` that runs a ``torch.compile``-d forward and falls back to eager.

    Compilation happens lazily at the first call (2-40 s on CPU, see REFERENCE.md) and again for each new input
    shape unless ``dynamic=True``: call it with fixed-size chunks (pad the last one) to avoid recompiles. If
    ``torch.compile`` is unavailable or compiling/running the compiled graph raises, a warning is issued once and
    every later call runs the eager model, so callers never need their own fallback. The parameters are the
    model's own: training through the compiled forward updates ``model``.

    Parameters
    ----------
    model : nn.Module or callable
        The model (an :class:`medinr.models.INR`), or a function of tensors (e.g. the KAN's pass over a chunk of
        lattice points).
    **options
        Passed to ``torch.compile`` (e.g. ``mode="max-autotune"``, ``dynamic=True``, ``backend``).
    """

    def __init__(self, model: nn.Module | Callable[..., Any], **options: Any) -> None:
        self.model = model
        self.fallback_reason: str | None = None
        self._compiled = None
        if hasattr(torch, "compile"):
            try:
                self._compiled = torch.compile(model, **options)
            except Exception as exc:  # noqa: BLE001 - any failure means "use eager"
                self._fall_back(exc)
        else:
            self.fallback_reason = "torch.compile is not available"

    @property
    def compiled(self) -> bool:
        """True while the compiled path is in use."""
        return self._compiled is not None

    def _fall_back(self, exc: BaseException) -> None:
        self._compiled = None
        self.fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"torch.compile failed, running eager instead ({self.fallback_reason})", stacklevel=3)

    def __call__(self, *args: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*args)
            except Exception as exc:  # noqa: BLE001 - compilation errors surface at the first call
                self._fall_back(exc)
        return self.model(*args)


def compile_model(model: nn.Module, **options: Any) -> CompiledForward:
    """Shorthand for :class:`CompiledForward` (``torch.compile`` with an eager fallback)."""
    return CompiledForward(model, **options)
