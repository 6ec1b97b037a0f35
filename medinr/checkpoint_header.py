"""The schema of a ``.inr`` checkpoint's JSON header, checked (types, ranges, consistency) before any module is built.

:func:`validate_header` returns the header with defaults filled in (``output``, ``coords``, ``extra``) or
raises one :class:`MedinrError` line naming the first bad field. Unknown keys are kept and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from medinr.continuous import FRAMES, OUTPUT_KINDS
from medinr.errors import MedinrError
from medinr.validation import MAX_IMAGE_AXIS, check_model_options, show

FORMAT = "medinr-inr"
FORMAT_VERSION = 1


class _Bad(Exception):
    """A schema violation (turned into one MedinrError line naming the file)."""


def _number(value: Any, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{what} must be a number, got {show(value)}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise _Bad(f"{what} must be a finite{' positive' if positive else ''} number, got {show(value)}")
    return float(value)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise _Bad(f"{what} must be in [{low}, {high}], got {value}")
    return value


def _list(value: Any, what: str, lengths: tuple[int, ...]) -> list:
    if not isinstance(value, list) or len(value) not in lengths:
        raise _Bad(f"{what} must be a list of {' or '.join(map(str, lengths))} items, got {show(value)}")
    return value


def _numbers(value: Any, what: str, lengths: tuple[int, ...], positive: bool = False) -> list[float]:
    return [_number(v, f"{what} item", positive) for v in _list(value, what, lengths)]


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object, got {show(value)}")
    return value


def _model(data: Any, families: Mapping[str, type]) -> dict:
    model = _dict(data, "model")
    family, config = model.get("family"), _dict(model.get("config"), "model.config")
    if not isinstance(family, str) or family not in families:
        raise _Bad(f"unknown model family {show(family)}")
    for key in ("in_features", "out_features"):
        _int(config.get(key), f"model.config.{key}", 1, 64)
    return model


def _output(data: Any) -> dict:
    out = _dict({} if data is None else data, "output")
    kind = out.get("kind", "intensity")
    if kind not in OUTPUT_KINDS:
        raise _Bad(f"output.kind must be one of {', '.join(OUTPUT_KINDS)}, got {show(kind)}")
    if _number(out.get("scale", 1.0), "output.scale") == 0:
        raise _Bad("output.scale must be non-zero")
    _number(out.get("offset", 0.0), "output.offset")
    units = out.get("units")
    if units is not None and (not isinstance(units, str) or len(units) > 64):
        raise _Bad(f"output.units must be a short string, got {show(units)}")
    return out


def _geometry(geo: dict) -> dict:
    shape = [_int(n, "geometry.shape item", 1, MAX_IMAGE_AXIS)
             for n in _list(geo.get("shape"), "geometry.shape", (2, 3))]
    if "affine" not in geo:
        raise _Bad("geometry has no affine (the voxel-to-world matrix)")
    rows = _list(geo["affine"], "geometry.affine", (4,))
    affine = np.array([_numbers(r, "geometry.affine row", (4,)) for r in rows])
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _Bad("geometry.affine is singular: voxel sizes must be non-zero")
    if "spacing_mm" in geo:
        spacing = _numbers(geo["spacing_mm"], "geometry.spacing_mm", (len(shape),), positive=True)
        if not np.allclose(spacing, np.linalg.norm(affine[:3, : len(shape)], axis=0), rtol=1e-3, atol=1e-6):
            raise _Bad(f"geometry.spacing_mm {spacing} does not match the affine")
    return geo


def _world_box(box: dict) -> dict:
    lo = _numbers(box.get("lo"), "world_box.lo", (2, 3))
    hi = _numbers(box.get("hi"), "world_box.hi", (len(lo),))
    if any(h < low for low, h in zip(lo, hi)):
        raise _Bad(f"world_box.hi {hi} lies below world_box.lo {lo}")
    return box


def _consistent(meta: dict) -> None:
    config, geo, box = meta["model"]["config"], meta["geometry"], meta["world_box"]
    frame, kind = meta["coords"], meta["output"].get("kind", "intensity")
    if frame == "network" and geo is None:
        raise _Bad("a 'network' frame needs a geometry")
    if frame == "world_box" and box is None:
        raise _Bad("a 'world_box' frame needs a world_box")
    ndim = len(geo["shape"]) if geo is not None else len(box["lo"]) if box is not None else config["in_features"]
    if geo is not None and box is not None and len(box["lo"]) != len(geo["shape"]):
        raise _Bad(f"the world box is {len(box['lo'])}D but the geometry is {len(geo['shape'])}D")
    if config["in_features"] != ndim:
        raise _Bad(f"the model takes {config['in_features']}D coordinates but the geometry is {ndim}D")
    need = {"complex": 2, "displacement": ndim}.get(kind)
    if need is not None and config["out_features"] != need:
        raise _Bad(f"a {kind} output needs {need} channels, the model has {config['out_features']}")


def _version(meta: dict, source: str) -> None:
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise MedinrError(f"{source} has damaged metadata: format_version must be an integer, got {show(version)}")
    if version > FORMAT_VERSION:
        raise MedinrError(f"{source} was written by a newer medinr (format {version}); please upgrade")
    if version < 1:
        raise MedinrError(f"{source} has an unknown format version {version} (this medinr reads 1 to {FORMAT_VERSION})")


def validate_header(meta: Any, source: str, families: Mapping[str, type]) -> dict[str, Any]:
    """Check a parsed header against the schema; return it with defaults filled in.

    Parameters
    ----------
    meta : object
        The parsed JSON of the header's ``medinr`` entry.
    source : str
        The file, for the message.
    families : mapping of str to class
        The model families this medinr knows (``MODEL_REGISTRY``); a family's ``option_limits`` apply.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MedinrError(f"{source} is not a medinr checkpoint (format tag missing)")
    _version(meta, source)
    out = dict(meta)
    try:
        if not isinstance(meta.get("medinr_version", ""), str):
            raise _Bad(f"medinr_version must be a string, got {show(meta['medinr_version'])}")
        out["model"] = _model(meta.get("model"), families)
        out["output"] = _output(meta.get("output"))
        for key, check in (("geometry", _geometry), ("world_box", _world_box)):  # both optional
            out[key] = None if meta.get(key) is None else check(_dict(meta[key], key))
        out["coords"] = meta.get("coords", "network")
        if out["coords"] not in FRAMES:
            raise _Bad(f"coords must be one of {', '.join(FRAMES)}, got {show(out['coords'])}")
        out["extra"] = _dict(meta.get("extra") or {}, "extra")
        _consistent(out)
        config = dict(out["model"]["config"])
        family = families[out["model"]["family"]]
        check_model_options(family, config.pop("in_features"), config.pop("out_features"), config)
    except (_Bad, MedinrError) as exc:
        raise MedinrError(f"{source} has damaged metadata: {exc}") from None
    return out
