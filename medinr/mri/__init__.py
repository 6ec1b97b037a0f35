"""MRI physics and reconstruction: centred FFTs, sampling masks, the held-out split, coil maps and noise, the SENSE
operator, the self-calibrated INR, CS baselines and the comparison of all methods (:mod:`medinr.mri.compare`).

The names below load their module on first use, so that :mod:`medinr.mri.config` (named by requests while
arguments are parsed) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "medinr.mri.fft": ("fftc", "ifftc"),
    "medinr.mri.holdout": ("readout_holdout",),
    "medinr.mri.masks": ("SamplingMask", "centre_box", "make_mask"),
    "medinr.mri.operators": ("Linop", "SenseOp"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'medinr.mri' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # over the submodule of the same name that the import bound here
    return value
