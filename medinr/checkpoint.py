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
from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.io import atomic_path
from medinr.models import build_model

FORMAT = "medinr-inr"
FORMAT_VERSION = 1
_META_KEY = "medinr"


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
    header = json.dumps(metadata(image), allow_nan=False)
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: header})
    return target


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, validated, without loading the weights."""
    p = Path(path)
    if not p.is_file():
        raise MedinrError(f"checkpoint not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MedinrError(f"{p} is not a medinr checkpoint (not a safetensors file: {str(exc).splitlines()[0]})") from None
    if raw is None:
        raise MedinrError(f"{p} is a safetensors file without medinr metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MedinrError(f"{p} has damaged metadata (bad JSON: {exc.msg} at char {exc.pos})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MedinrError(f"{p} is not a medinr checkpoint (format tag missing)")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise MedinrError(f"{p} was written by a newer medinr (format {meta['format_version']}); please upgrade")
    model = meta.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict) or "family" not in model:
        raise MedinrError(f"{p} has damaged metadata: no model family/config")
    return meta


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> ContinuousImage:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    MedinrError
        For a missing, foreign (e.g. pickled) or damaged file, or weights that do not match the config.
    """
    meta = read_metadata(path)
    config = dict(meta["model"]["config"])
    in_f, out_f = config.pop("in_features", None), config.pop("out_features", None)
    if in_f is None or out_f is None:
        raise MedinrError(f"{path} has damaged metadata: model config lacks in/out features")
    model = build_model(meta["model"]["family"], in_f, out_f, **config)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, KeyError, ValueError) as exc:
        raise MedinrError(f"{path}: weights do not match the model config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    geometry = Geometry.from_dict(meta["geometry"]) if meta.get("geometry") else None
    world_box = WorldBox.from_dict(meta["world_box"]) if meta.get("world_box") else None
    try:
        return ContinuousImage(
            model=model,
            geometry=geometry,
            output=OutputMeaning.from_dict(meta.get("output") or {}),
            frame=meta.get("coords", "network"),
            world_box=world_box,
            extra=meta.get("extra") or {},
        )
    except MedinrError as exc:
        raise MedinrError(f"{path} has inconsistent metadata: {exc}") from None
