"""The compute device of a run: 'cpu', 'cuda' or 'auto' (a GPU when there is one)."""

from __future__ import annotations

import torch

from medinr.errors import MedinrError


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name`` ('auto': cuda if available, else cpu); one clear error for a bad name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MedinrError(f"unknown device '{name}' (cpu, cuda, auto)") from None
    if dev.type not in ("cpu", "cuda"):
        raise MedinrError(f"unknown device '{name}' (cpu, cuda, auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedinrError("--device cuda was asked for but no CUDA device is available")
    return dev
