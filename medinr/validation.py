"""Validation before work: minimum image sizes, binary masks, model options against their family's typed config.

Every check raises :class:`MedinrError` with one line that names the bad value, before anything is built,
allocated or fitted. Nothing here imports the model zoo: the option ranges are read from the config a family
hands in (``build_model`` calls :func:`checked_build`).
"""

from __future__ import annotations

import math
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
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


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 4, 4, 40, 40, 40


def show(value: Any, limit: int = 40) -> str:
    """A short ``repr`` of a value from a file, for an error line (bounded work at any nesting depth)."""
    text = _SHORT.repr(value)
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
#: Longest string and list a model option may hold.
_MAX_CHARS, _MAX_ITEMS = 256, 256


def _bad(name: str, text: str) -> MedinrError:
    return MedinrError(f"model option '{name}' {text}")


def _check_number(spec: Any, name: str, value: Any, integer: bool) -> None:
    if integer and not isinstance(value, (int, np.integer)):
        raise _bad(name, f"must be an integer, got {show(value)}")
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        raise _bad(name, f"must be finite, got {show(value)}")
    low, high = spec.low, spec.high
    below = low is not None and (value <= low if spec.low_open else value < low)
    if below or (high is not None and value > high):
        raise _bad(name, f"must be in {spec.range_text()}, got {show(value)}")


def _check_value(spec: Any, name: str, value: Any, hint: Any) -> None:
    """``value`` against the type ``hint`` of option ``spec`` (ranges apply to numbers and list items)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        return _check_value(spec, name, value, next(a for a in args if a is not type(None)))
    if hint is Any:
        return
    if hint is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise _bad(name, f"must be true or false, got {show(value)}")
    elif hint in (int, float):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise _bad(name, f"must be {'an integer' if hint is int else 'a number'}, got {show(value)}")
        _check_number(spec, name, value, hint is int)
    elif hint is str:
        if not isinstance(value, str) or len(value) > _MAX_CHARS:
            raise _bad(name, f"must be a short string, got {show(value)}")
        if spec.choices is not None and value not in spec.choices:
            raise _bad(name, f"must be one of {', '.join(map(str, spec.choices))}; got {show(value)}")
    elif origin is list:
        _check_items(spec, name, value, args[0])
    elif origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _bad(name, f"must be an object with string keys, got {show(value)}")
    else:  # a config declared a type this checker does not know: a bug, not bad input
        raise TypeError(f"option '{name}' has an unsupported type {hint}")


def _check_items(spec: Any, name: str, value: Any, item: Any) -> None:
    if not isinstance(value, (list, tuple)):
        raise _bad(name, f"must be a list, got {show(value)}")
    least, most = spec.items or (0, _MAX_ITEMS)
    if not least <= len(value) <= most:
        count = f"{least} to {most}" if least else f"at most {most}"
        raise _bad(name, f"must have {count} items, got {len(value)}")
    for v in value:
        _check_value(spec, name, v, item)


def check_options(config_type: Any, options: Mapping[str, Any], owner: str, prefix: str = "") -> None:
    """Refuse options that ``config_type`` (a family's typed config, :mod:`medinr.models.config`) does not declare,
    or whose type or range it does not allow, then apply its rules between options.

    ``owner`` names the family in the unknown-option line ("model 'siren'"); ``prefix`` is put before option
    names of a nested config ("encoding_options.").
    """
    specs = config_type.specs()
    for name in options:
        if name not in specs:
            raise MedinrError(f"{owner} has no option {show(str(name))}; its options are: {', '.join(specs)}")
    for name, value in options.items():
        spec = specs[name]
        _check_value(spec, prefix + name, value.item() if isinstance(value, np.generic) else value, spec.type)
    config_type.check_values({**config_type.defaults(), **options}, prefix)


def check_model_options(cls: type, in_features: Any, out_features: Any, options: dict[str, Any]) -> None:
    """Types and ranges of a model's options, read from the family's typed config (``cls.config_type``), before
    anything is built."""
    for what, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 64:
            raise MedinrError(f"model {what} must be an integer in [1, 64], got {show(value)}")
    check_options(cls.config_type, options, f"model '{getattr(cls, 'family', cls.__name__)}'")


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
