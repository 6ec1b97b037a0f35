"""Validation before work: minimum image sizes, model options in range, checkpoint headers against a schema.

Every check raises :class:`MedinrError` with one line that names the bad value, before anything is built,
allocated or fitted. Nothing here imports the model zoo (``build_model`` calls :func:`checked_build`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medinr.errors import MedinrError
from medinr.resources import allocation_guard, check_budget

#: The smallest image axis medinr fits, reconstructs or registers: the smallest SSIM window
#: (:data:`medinr.metrics.MIN_SSIM_AXIS`; a multi-slice stack such as 256 x 256 x 8 is scored slice by slice, a
#: small image with a uniform window), so every fit and reconstruction can report what it promises.
MIN_IMAGE_AXIS = 3
#: Largest axis of an image or checkpoint grid, voxels.
MAX_IMAGE_AXIS = 1 << 16


def show(value: Any, limit: int = 40) -> str:
    """A short ``repr`` of a value from a file, for an error line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_image_size(shape: Sequence[int], what: str = "the image") -> None:
    """Refuse images too small to fit or score: every axis needs :data:`MIN_IMAGE_AXIS` voxels.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape ``(i, j[, k])``.
    what : str
        Name of the image in the message (e.g. its path).
    """
    shape = tuple(int(s) for s in shape)
    if min(shape) < MIN_IMAGE_AXIS:
        hint = " (a [coils, ky, kx] k-space array must be complex)" if len(shape) == 3 and min(shape) <= 4 else ""
        raise MedinrError(
            f"{what} has shape {shape}: every axis needs at least {MIN_IMAGE_AXIS} voxels{hint}"
        )
    if max(shape) > MAX_IMAGE_AXIS:
        raise MedinrError(f"{what} has shape {shape}: an axis of more than {MAX_IMAGE_AXIS} voxels is not supported")


def require_binary(array: np.ndarray, what: str) -> np.ndarray:
    """``array != 0`` for an array of only 0 and 1 (or bool); anything else is refused, not thresholded.

    A mask with values 0..255 is ambiguous (a soft mask? a label map?): say what to do rather than guess.
    """
    arr = np.asarray(array)
    if arr.dtype != bool:
        bad = (arr != 0) & (arr != 1)
        if np.any(bad):
            raise MedinrError(
                f"{what} must hold only 0 (not acquired) and 1 (acquired); it holds {show(arr[bad].flat[0])} "
                "(threshold it first, e.g. mask > 0)"
            )
    return arr != 0


# -- model options ---------------------------------------------------------------------------------------------
#: Integer ranges of common INR options by name, for every family (lists: each element). A family may add or
#: tighten ranges with a class attribute ``option_limits = {"name": (low, high)}``. The ranges stop what would
#: hang or cannot be built; sizes inside them are then checked against the memory budget while building.
OPTION_LIMITS: dict[str, tuple[float, float]] = {
    "hidden": (1, 1 << 16), "layers": (0, 256), "channels": (1, 4096), "kernel_size": (1, 31),
    "n_frequencies": (1, 1 << 16), "levels": (1, 64), "features_per_level": (1, 64), "log2_table_size": (1, 30),
    "base_resolution": (1, 1 << 16), "max_resolution": (1, 1 << 16), "grid": (1, 1024), "order": (0, 16),
    "lattice": (2, MAX_IMAGE_AXIS), "widths": (1, 1 << 16), "reg_samples": (1, 1 << 24),
}
_MAX_ITEMS = 256


def _check_option(name: str, value: Any, limits: dict, depth: int = 0) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        if len(value) > 256:
            raise MedinrError(f"model option '{name}' is a string of {len(value)} characters")
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise MedinrError(f"model option '{name}' must be finite, got {value}")
        lo, hi = limits.get(name, (-(1 << 31), 1 << 31))
        if name in limits and isinstance(value, float) and not value.is_integer():
            raise MedinrError(f"model option '{name}' must be an integer, got {value}")
        if not lo <= value <= hi:
            raise MedinrError(f"model option '{name}' must be in [{lo:g}, {hi:g}], got {show(value)}")
        return
    if isinstance(value, (list, tuple)) and depth < 3:
        if len(value) > _MAX_ITEMS:
            raise MedinrError(f"model option '{name}' has {len(value)} items (at most {_MAX_ITEMS})")
        for item in value:
            _check_option(name, item, limits, depth + 1)
        return
    if isinstance(value, dict) and depth < 3:
        for key, item in value.items():
            _check_option(str(key), item, limits, depth + 1)
        return
    raise MedinrError(f"model option '{name}' has an unsupported value {show(value)}")


def check_model_options(cls: type, in_features: Any, out_features: Any, options: dict[str, Any]) -> None:
    """Types and ranges of a model's options (see :data:`OPTION_LIMITS`), before anything is built."""
    for what, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 64:
            raise MedinrError(f"model {what} must be an integer in [1, 64], got {show(value)}")
    limits = {**OPTION_LIMITS, **getattr(cls, "option_limits", {})}
    for name, value in options.items():
        _check_option(str(name), value, limits)


def lattice_forward_bytes(model: Any) -> int:
    """Memory of one training pass of a lattice-bound model on its lattice (activations of every layer kept).

    Each convolution's output, normalisation and activation: 3 float32 tensors of ``out_channels`` per point.
    """
    points = math.prod(int(n) for n in getattr(model, "lattice", ()) or (0,))
    widths = sum(int(getattr(m, "out_channels", 0)) for m in model.modules())
    return points * 4 * (3 * widths + int(model.in_features))


def checked_build(cls: type, in_features: Any, out_features: Any, options: dict[str, Any]) -> Any:
    """Build ``cls(in_features, out_features, **options)`` after :func:`check_model_options`, refusing
    weights beyond a quarter of the memory budget (gradients and Adam's two moments need as much each)
    before they are allocated, and a lattice-bound model whose lattice pass exceeds the budget."""
    check_model_options(cls, in_features, out_features, options)
    name = getattr(cls, "family", cls.__name__)
    with allocation_guard(f"the weights of model '{name}'", share=0.25):
        model = cls(in_features=in_features, out_features=out_features, **options)
    if getattr(model, "lattice_bound", False):
        check_budget(lattice_forward_bytes(model), f"model '{name}' on its {list(model.lattice)} lattice")
    return model
