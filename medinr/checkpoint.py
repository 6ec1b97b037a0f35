"""The ``.inr`` checkpoint: one safetensors file holding a :class:`ContinuousImage`: weights as plain tensors,
everything else (family and config, output meaning, geometry, coordinate frame) as JSON in the header, in the
one header schema (:class:`medinr.schema.CheckpointHeader`).

Loading parses a JSON header and raw tensor bytes only; nothing in the file is ever unpickled or run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import medinr
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.io import atomic_path
from medinr.models import MODEL_REGISTRY, build_model
from medinr.resources import check_budget
from medinr.schema import (
    FORMAT,
    FORMAT_VERSION,
    MAX_HEADER_CHARS,
    CheckpointHeader,
    ModelSpec,
    header_text,
    read_safetensors_header,
)
from medinr.validation import show

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_HEADER_CHARS", "header_of", "load_checkpoint", "metadata", "read_header",
           "read_metadata", "save_checkpoint"]
_META_KEY = "medinr"


def header_of(image: ContinuousImage) -> CheckpointHeader:
    """The header that describes ``image`` (everything but its weights)."""
    return CheckpointHeader(
        model=ModelSpec(image.model.family, dict(image.model.config)),
        output=image.output,
        frame=image.frame,
        geometry=image.geometry,
        world_box=image.world_box,
        extra=image.extra,
        medinr_version=medinr.__version__,
    )


def metadata(image: ContinuousImage) -> dict[str, Any]:
    """The JSON header of ``image``'s checkpoint."""
    return header_of(image).to_json()


def save_checkpoint(path: str | os.PathLike, image: ContinuousImage) -> Path:
    """Write ``image`` atomically to ``path`` (conventionally ``*.inr``).

    Raises
    ------
    MedinrError
        If the header could not be read back (``extra`` nested deeper than :data:`medinr.schema.MAX_DEPTH`).
    """
    target = Path(path)
    header = header_text(metadata(image), f"{target} was not written")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in image.model.state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: header})
    return target


def _header_and_tensors(path: Path) -> tuple[CheckpointHeader, dict[str, dict]]:
    if not path.is_file():
        raise MedinrError(f"checkpoint not found: {path}")
    meta, tensors = read_safetensors_header(path, "medinr checkpoint")
    text = meta.get(_META_KEY)
    if text is None:
        raise MedinrError(f"{path} is a safetensors file without medinr metadata")
    if len(text) > MAX_HEADER_CHARS:
        raise MedinrError(f"{path} has damaged metadata: a header of {len(text)} characters "
                          f"(at most {MAX_HEADER_CHARS})")
    return CheckpointHeader.parse(text, str(path), MODEL_REGISTRY), tensors


def read_header(path: str | os.PathLike) -> CheckpointHeader:
    """The header of a checkpoint, checked against the schema, without reading the weights.

    Raises
    ------
    MedinrError
        For a missing or foreign file, a tensor named twice, or a header that fails
        :meth:`medinr.schema.CheckpointHeader.parse` (every field is checked before this returns).
    """
    return _header_and_tensors(Path(path))[0]


def _weight_count(tensors: dict[str, dict]) -> tuple[int, int] | None:
    """``(parameters, tensors)`` that a tensor table declares; None when an entry has no list of sizes
    (:func:`load_checkpoint` refuses such a file)."""
    total = 0
    for entry in tensors.values():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            return None
        total += math.prod(shape)
    return total, len(tensors)


def read_metadata_and_count(path: str | os.PathLike) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """:func:`read_metadata` and the ``(parameters, tensors)`` its tensor table declares, from one reading of the
    header (no weight is read; None for a table :func:`load_checkpoint` would refuse)."""
    header, tensors = _header_and_tensors(Path(path))
    return header.to_json(), _weight_count(tensors)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`read_header` as the JSON it would be written as (format :data:`FORMAT_VERSION`: ``frame``)."""
    return read_header(path).to_json()


def _read_weights(path: Path, model: torch.nn.Module, table: dict[str, dict],
                  device: str | torch.device) -> dict[str, torch.Tensor]:
    """The file's tensors, after their names and shapes were compared with ``model``'s (before reading any)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.get("shape") or ()) if isinstance(v.get("shape"), list) else None for k, v in table.items()}
    if found != expected:
        key = sorted(set(found) ^ set(expected)) or [k for k in sorted(found) if found[k] != expected[k]]
        raise MedinrError(
            f"{path}: weights do not match the model config (tensor {show(key[0])}: file "
            f"{show(found.get(key[0], 'missing'))}, config {expected.get(key[0], 'none')})"
        )
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, RuntimeError, KeyError, ValueError, OSError) as exc:
        raise MedinrError(f"{path}: weights cannot be read ({str(exc).splitlines()[0]})") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MedinrError(f"{path}: weight '{key}' holds NaN or infinite values (a damaged checkpoint)")
    return state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> ContinuousImage:
    """Load a checkpoint written by :func:`save_checkpoint` (or by format 1).

    The header is validated first, the model is built within the memory budget (its size known from its
    config), and the file's tensor names and shapes are compared with the model's before any is read.

    Raises
    ------
    MedinrError
        For a missing, foreign (e.g. pickled) or damaged file, weights that do not match the config or are
        not finite, or a model beyond the memory budget.
    """
    p = Path(path)
    header, table = _header_and_tensors(p)
    check_budget(2 * p.stat().st_size, f"loading {p}")
    model = build_model(header.model.family, header.model.in_features, header.model.out_features,
                        **header.model.options())
    try:
        model.load_state_dict(_read_weights(p, model, table, device), strict=True)
    except RuntimeError as exc:
        raise MedinrError(f"{p}: weights do not match the model config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    return ContinuousImage(model=model, geometry=header.geometry, output=header.output, frame=header.frame,
                           world_box=header.world_box, extra=header.extra)
