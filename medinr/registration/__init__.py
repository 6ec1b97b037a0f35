"""Image registration with an INR displacement field u(x) in world millimetres (x -> x + u(x)).

The names below load their module on first use, so that :mod:`medinr.registration.settings` (named by requests
while arguments are parsed) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "medinr.registration.register": ("register", "register_with_inverse"),
    "medinr.registration.settings": ("PRESETS", "RegistrationSettings", "settings_from_preset"),
    "medinr.registration.transform": ("Warper",),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'medinr.registration' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # over the submodule of the same name that the import bound here
    return value
