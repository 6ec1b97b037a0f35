"""The ``.inr`` checkpoint: one safetensors file holding a :class:`ContinuousImage`: weights as plain tensors,
everything else (family and config, output meaning, geometry, coordinate frame) as JSON in the header.

Loading parses a JSON header and raw tensor bytes only; nothing in the file is ever unpickled or run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import medinr
from medinr.checkpoint_header import FORMAT, FORMAT_VERSION, validate_header
from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.io import atomic_path
from medinr.models import MODEL_REGISTRY, build_model
from medinr.resources import check_budget
from medinr.textsafe import dumps_strict

__all__ = ["FORMAT", "FORMAT_VERSION", "load_checkpoint", "metadata", "read_metadata", "save_checkpoint"]
_META_KEY = "medinr"
#: The largest JSON header read (a real one is a few kB; extra metadata stays far below this).
MAX_HEADER_CHARS = 4 << 20


def metadata(image: ContinuousImage) -> dict[str, Any]:
    """The JSON header of ``image``'s checkpoint."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medinr_version": medinr.__version__,
        "model": {"family": image.model.family, "config": image.model.config},
        "output": image.output.to_dict(),
        "geometry": image.geometry.to_dict() if image.geometry is not None else None,
        "coords": image.frame,
        "world_box": image.world_box.to_dict() if image.world_box is not None else None,
        "extra": image.extra,
    }


def save_checkpoint(path: str | os.PathLike, image: ContinuousImage) -> Path:
    """Write ``image`` atomically to ``path`` (conventionally ``*.inr``)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in image.model.state_dict().items()}
    header = dumps_strict(metadata(image))  # non-finite metrics in ``extra`` are written as "inf"/"nan"
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: header})
    return target


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, validated against the header schema, without loading the weights.

    Raises
    ------
    MedinrError
        For a missing or foreign file, or a header that fails :func:`medinr.checkpoint_header.validate_header`.
    """
    p = Path(path)
    if not p.is_file():
        raise MedinrError(f"checkpoint not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MedinrError(f"{p} is not a medinr checkpoint (not a safetensors file: {reason})") from None
    if raw is None:
        raise MedinrError(f"{p} is a safetensors file without medinr metadata")
    if len(raw) > MAX_HEADER_CHARS:
        raise MedinrError(f"{p} has damaged metadata: a header of {len(raw)} characters (at most {MAX_HEADER_CHARS})")
    try:
        meta = json.loads(raw, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f": {exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ": nested too deeply"
        raise MedinrError(f"{p} has damaged metadata (bad JSON{where})") from None
    except ValueError as exc:
        raise MedinrError(f"{p} has damaged metadata (bad JSON: {exc})") from None
    return validate_header(meta, str(p), MODEL_REGISTRY)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _read_weights(path: Path, model: torch.nn.Module, device: str | torch.device) -> dict[str, torch.Tensor]:
    """The file's tensors, after their names and shapes were compared with ``model``'s (before reading any)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if found != expected:
                key = sorted(set(found) ^ set(expected)) or [k for k in sorted(found) if found[k] != expected[k]]
                raise MedinrError(
                    f"{path}: weights do not match the model config (tensor '{key[0]}': file "
                    f"{found.get(key[0], 'missing')}, config {expected.get(key[0], 'none')})"
                )
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, RuntimeError, KeyError, ValueError, OSError) as exc:
        raise MedinrError(f"{path}: weights cannot be read ({str(exc).splitlines()[0]})") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MedinrError(f"{path}: weight '{key}' holds NaN or infinite values (a damaged checkpoint)")
    return state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> ContinuousImage:
    """Load a checkpoint written by :func:`save_checkpoint`.

    The header is validated first, the model is built within the memory budget (its size known from its
    config), and the file's tensor names and shapes are compared with the model's before any is read.

    Raises
    ------
    MedinrError
        For a missing, foreign (e.g. pickled) or damaged file, weights that do not match the config or are
        not finite, or a model beyond the memory budget.
    """
    p = Path(path)
    meta = read_metadata(p)
    check_budget(2 * p.stat().st_size, f"loading {p}")
    config = dict(meta["model"]["config"])
    in_f, out_f = config.pop("in_features"), config.pop("out_features")
    model = build_model(meta["model"]["family"], in_f, out_f, **config)
    try:
        model.load_state_dict(_read_weights(p, model, device), strict=True)
    except RuntimeError as exc:
        raise MedinrError(f"{p}: weights do not match the model config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    try:
        return ContinuousImage(
            model=model,
            geometry=Geometry.from_dict(meta["geometry"]) if meta["geometry"] else None,
            output=OutputMeaning.from_dict(meta["output"]),
            frame=meta["coords"],
            world_box=WorldBox.from_dict(meta["world_box"]) if meta["world_box"] else None,
            extra=meta["extra"],
        )
    except MedinrError as exc:
        raise MedinrError(f"{p} has inconsistent metadata: {exc}") from None
