"""Layer data for a checkpoint, without Qt: what the reader and the sample data hand to napari."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medinr.checkpoint import load_checkpoint
from medinr.continuous import ContinuousImage
from medinr.render import describe, render_volume, volume_geometry

#: Voxel budget of the volume a drag-and-drop shows (about 80^3): a preview, the slicer gives full detail.
VOLUME_VOXELS = 1 << 19
#: The Jacobian needs 2 ndim evaluations per voxel: a smaller grid keeps opening a file quick.
JACOBIAN_VOXELS = 1 << 16

#: Key of layer metadata that carries the checkpoint to the slicing widget.
CHECKPOINT_KEY = "medinr_checkpoint"
#: Key of layer metadata holding the 4x4 RAS affine of the layer's data (read by the writer).
AFFINE_KEY = "medinr_affine"


def napari_affine(geometry_affine: np.ndarray, ndim: int, affine_nd: np.ndarray | None = None) -> np.ndarray:
    """The affine napari wants: 4x4 for a volume, 3x3 (in-plane world mm) for a 2D image."""
    return np.asarray(geometry_affine if ndim == 3 else affine_nd, dtype=np.float64)


def checkpoint_layers(
    ckpt: ContinuousImage, name: str, path: str | os.PathLike | None = None
) -> list[tuple[Any, dict, str]]:
    """Layer data tuples for a checkpoint: its volume, plus magnitude and Jacobian for a registration."""
    kind = ckpt.kind
    note = describe(ckpt)
    meta = {CHECKPOINT_KEY: ckpt, "medinr_path": str(path) if path else None, "medinr_description": note}
    volume, geom = render_volume(ckpt, max_voxels=VOLUME_VOXELS)
    aff = napari_affine(geom.affine, geom.ndim, geom.affine_nd)
    label = {"intensity": name, "complex": f"{name} |m|", "displacement": f"{name} |u| mm"}.get(kind, name)
    layers = [
        (
            volume,
            {"name": label, "affine": aff, "metadata": {**meta, AFFINE_KEY: geom.affine}, "colormap": "gray"},
            "image",
        )
    ]
    if kind == "displacement":
        jac, jgeom = render_volume(ckpt, max_voxels=JACOBIAN_VOXELS, component="jacobian")
        layers.append(
            (
                jac,
                {
                    "name": f"{name} det J",
                    "affine": napari_affine(jgeom.affine, jgeom.ndim, jgeom.affine_nd),
                    "metadata": {**meta, AFFINE_KEY: jgeom.affine},
                    "colormap": "PiYG",
                    "contrast_limits": (0.0, 2.0),
                    "visible": False,
                },
                "image",
            )
        )
    return layers


def open_checkpoint(path: str | os.PathLike) -> list[tuple[Any, dict, str]]:
    """Load a ``.inr`` file (CPU) and build its layers."""
    ckpt = load_checkpoint(path, device="cpu")
    return checkpoint_layers(ckpt, os.path.basename(str(path)).removesuffix(".inr"), path)


def volume_shape(ckpt: ContinuousImage) -> tuple[int, ...]:
    return volume_geometry(ckpt, max_voxels=VOLUME_VOXELS).shape
