"""The training engine: one loop (:func:`fit`), held-out validators, the best-iterate rule and the final stage.

Image fitting, reconstruction, registration and prior fits all run through :func:`fit`
(:mod:`medinr.training.loop`); fits validated on a split run through :func:`fit_with_holdout`
(:mod:`medinr.training.selection`). This is where a run spends its time, and where it is measured
(:class:`Timings`). The names below load their module on first use, so that :mod:`medinr.training.final`
(named by requests while arguments are parsed) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "medinr.training.final": ("FINAL_STAGES", "FinalStage"),
    "medinr.training.loop": ("Parameters", "Schedule", "Together", "Trainable", "TrainResult", "fit", "lr_lambda",
                             "seed_everything"),
    "medinr.training.selection": ("BestIterate", "HeldOutFit", "fit_with_holdout"),
    "medinr.training.timing": ("Timings",),
    "medinr.training.validators": ("HeldOutSamples", "HeldOutVoxels", "Validator", "held_out_residual"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'medinr.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # over the submodule of the same name that the import bound here
    return value
