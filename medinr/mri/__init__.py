"""MRI physics and reconstruction: centred FFTs, sampling masks, the held-out split, coil maps and noise, the SENSE
operator, the self-calibrated INR, CS baselines and the comparison of all methods (:mod:`medinr.mri.compare`).

The names below are imported when first used, so that reading and checking a k-space file
(:mod:`medinr.mri.kspace_io`) does not wait for torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"fftc": "fft", "ifftc": "fft", "holdout_split": "holdout", "SamplingMask": "masks",
            "centre_box": "masks", "make_mask": "masks", "Linop": "operators", "SenseOp": "operators"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medinr.mri' has no attribute '{name}'")
    return getattr(import_module(f"medinr.mri.{_EXPORTS[name]}"), name)
