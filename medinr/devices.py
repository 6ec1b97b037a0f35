"""The compute device of a run: 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto' (a GPU when there is one)."""

from __future__ import annotations

import torch

from medinr.errors import MedinrError

#: Device names a run accepts (checked again here for callers that did not go through the command line).
KNOWN = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name`` ('auto': cuda if available, else cpu); one clear error for a device medinr
    cannot compute on (``meta``) or one this machine does not have."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in KNOWN:
        raise MedinrError(f"unknown device '{name}' (cpu, cuda, cuda:N, mps or auto)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MedinrError(f"--device {text} was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MedinrError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise MedinrError("--device mps was asked for but no MPS device is available")
    return dev
