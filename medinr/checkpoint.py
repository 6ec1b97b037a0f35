"""The ``.inr`` checkpoint: one safetensors file, weights as plain tensors, everything else as JSON.

Loading parses a JSON header and raw tensor bytes only; nothing in the file is ever unpickled or run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import medinr
from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.io import atomic_path
from medinr.models import INR, build_model

FORMAT = "medinr-inr"
FORMAT_VERSION = 1
_META_KEY = "medinr"


@dataclass
class Checkpoint:
    """A trained INR and what its output means.

    Attributes
    ----------
    model : INR
        The network, in eval mode.
    geometry : Geometry or None
        The grid the network was fitted on (affine, shape, spacing).
    output : dict
        What the channels mean: ``kind`` ('intensity', 'complex' (2 channels: real, imaginary),
        'displacement' (ndim channels, mm)), and ``scale``/``offset`` so that
        ``value = network * scale + offset`` is in the input's units.
    coords : str
        'network' (coordinates are the geometry's [-1, 1] grid) or 'world_box' (world mm scaled by
        :attr:`world_box`).
    world_box : WorldBox or None
    extra : dict
        Free-form JSON metadata (settings of the fit, metrics, ...).
    """

    model: INR
    geometry: Geometry | None = None
    output: dict[str, Any] = field(default_factory=lambda: {"kind": "intensity", "scale": 1.0, "offset": 0.0})
    coords: str = "network"
    world_box: WorldBox | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "medinr_version": medinr.__version__,
            "model": {"family": self.model.family, "config": self.model.config},
            "output": self.output,
            "geometry": self.geometry.to_dict() if self.geometry is not None else None,
            "coords": self.coords,
            "world_box": self.world_box.to_dict() if self.world_box is not None else None,
            "extra": self.extra,
        }

    def to_output_units(self, values: torch.Tensor) -> torch.Tensor:
        """Map raw network outputs to the units of the data the network was fitted to."""
        return values * float(self.output.get("scale", 1.0)) + float(self.output.get("offset", 0.0))

    def coords_from_world(self, xyz: torch.Tensor) -> torch.Tensor:
        """Network input coordinates for world points in millimetres."""
        if self.coords == "world_box":
            if self.world_box is None:
                raise MedinrError("checkpoint uses world-box coordinates but holds no world box")
            return self.world_box.to_network(xyz)
        if self.geometry is None:
            raise MedinrError("checkpoint has no geometry: cannot place it in world coordinates")
        return self.geometry.world_to_network(xyz)


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically to ``path`` (conventionally ``*.inr``)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in ckpt.model.state_dict().items()}
    header = json.dumps(ckpt.metadata(), allow_nan=False)
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


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
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
        prepare = getattr(model, "prepare_state", None)
        if prepare is not None:  # families whose shapes change in training (pruned KAN) resize first
            prepare(state)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, KeyError, ValueError) as exc:
        raise MedinrError(f"{path}: weights do not match the model config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    geometry = Geometry.from_dict(meta["geometry"]) if meta.get("geometry") else None
    world_box = WorldBox.from_dict(meta["world_box"]) if meta.get("world_box") else None
    return Checkpoint(
        model=model,
        geometry=geometry,
        output=meta.get("output") or {"kind": "intensity", "scale": 1.0, "offset": 0.0},
        coords=meta.get("coords", "network"),
        world_box=world_box,
        extra=meta.get("extra") or {},
    )
