"""Layer data for checkpoints and NIfTI images, without Qt: what the readers and the sample data hand to napari.

A checkpoint opens as its cached lattice (the training grid, from the cache file beside it when one is valid)
shown as a volume; when building that lattice would hold napari up for more than :data:`OPEN_SECONDS`, a
coarser lattice is shown at once and the full one replaces it from a background thread (``_lattices``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from medinr.checkpoint import load_checkpoint
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import load_image
from medinr.render import CachedLattice, build_lattice, plan_lattice, resolve_component
from medinr.render.lattice import cached_lattice_steps, load_lattice, run_steps, seconds_per_point
from napari_plugin._lattices import cache_file
from napari_plugin._slicer_model import display_for

#: Longest synchronous lattice build when a file opens (seconds, estimated); beyond it a preview comes first.
OPEN_SECONDS = 1.0

#: Key of layer metadata that carries the checkpoint to the slicing widget.
CHECKPOINT_KEY = "medinr_checkpoint"
#: Key of layer metadata holding the 4x4 RAS affine of the layer's data (read by the writer).
AFFINE_KEY = "medinr_affine"
#: Key of layer metadata naming what a checkpoint layer shows ('volume': its lattice).
ROLE_KEY = "medinr_role"

LayerData = tuple[Any, dict, str]


def napari_affine(geometry: Geometry) -> np.ndarray:
    """The affine napari wants: 4x4 for a volume, 3x3 (in-plane world mm) for a 2D image."""
    return np.asarray(geometry.affine if geometry.ndim == 3 else geometry.affine_nd, dtype=np.float64)


def open_lattice(image: ContinuousImage, path: str | None) -> tuple[CachedLattice, bool]:
    """The lattice to show when ``image`` opens and whether it is final (False: a preview to be replaced)."""
    cache = cache_file(path)
    if path is not None and cache is not None and cache.is_file():
        from medinr.render.lattice import file_sha256

        try:
            return load_lattice(cache, file_sha256(path)), True
        except MedinrError:
            pass  # stale or foreign: rebuilt
    geom = plan_lattice(image)
    estimate = seconds_per_point(image) * float(np.prod(geom.shape))
    if estimate <= OPEN_SECONDS:
        if path is not None:
            return run_steps(cached_lattice_steps(image, path, cache, geom)), True
        return build_lattice(image, geom), True
    return build_lattice(image, plan_lattice(image, seconds=OPEN_SECONDS / 2)), False


def volume_layer(image: ContinuousImage, lattice: CachedLattice, name: str, meta: dict) -> LayerData:
    """The lattice as an image layer at its world position, coloured for its default component."""
    comp = resolve_component(image, "auto")
    volume = lattice.volume(comp)
    shown = display_for(image.kind, comp, volume)
    label = {"intensity": name, "complex": f"{name} |m|", "displacement": f"{name} |u| mm"}.get(image.kind, name)
    kwargs = {
        "name": label,
        "affine": napari_affine(lattice.geometry),
        "metadata": {**meta, ROLE_KEY: "volume", AFFINE_KEY: lattice.geometry.affine},
        "colormap": shown.colormap,
        "contrast_limits": shown.contrast_limits,
        "units": ("mm",) * lattice.ndim,
    }
    return volume, kwargs, "image"


def checkpoint_layers(
    image: ContinuousImage,
    name: str,
    path: str | os.PathLike | None = None,
    lattice: CachedLattice | None = None,
    final: bool = True,
) -> list[LayerData]:
    """Layer data for a checkpoint: its lattice (given, else :func:`open_lattice`) as a volume."""
    path = None if path is None else str(path)
    if lattice is None:
        lattice, final = open_lattice(image, path)
    meta = {
        CHECKPOINT_KEY: image,
        "medinr_path": path,
        "medinr_description": image.describe(),
        "medinr_pending": not final,
    }
    return [volume_layer(image, lattice, name, meta)]


@dataclass
class Opened:
    """A checkpoint file as it opens: the image, its first lattice (``final`` or a preview), its layers."""

    image: ContinuousImage
    lattice: CachedLattice
    final: bool
    layers: list[LayerData]


def open_checkpoint(path: str | os.PathLike) -> Opened:
    """Load a ``.inr`` file (CPU), its first lattice and its layers."""
    image = load_checkpoint(path, device="cpu")
    lattice, final = open_lattice(image, str(path))
    name = os.path.basename(str(path)).removesuffix(".inr")
    return Opened(image, lattice, final, checkpoint_layers(image, name, path, lattice, final))


def nifti_layers(path: str | os.PathLike) -> list[LayerData]:
    """A NIfTI image (nibabel, affine kept) as an image layer in world mm; a vector image as one layer per component."""
    import nibabel as nib

    try:
        vector = len(nib.load(str(path)).shape) > 3  # 3 trailing values are 3 slices unless the file is 4D/5D
    except Exception:  # noqa: BLE001 - load_image below reports an unreadable file in one line
        vector = False
    array, geom = load_image(path, allow_vector=vector)
    name = os.path.basename(str(path)).removesuffix(".gz").removesuffix(".nii")
    meta = {
        "name": name,
        "affine": napari_affine(geom),
        "metadata": {AFFINE_KEY: geom.affine},
        "units": ("mm",) * geom.ndim,
    }
    data = np.asarray(array)
    if data.ndim == geom.ndim + 1:  # a vector image (e.g. a displacement field): one layer per component
        meta["channel_axis"] = geom.ndim
        meta["name"] = [f"{name} [{c}]" for c in range(data.shape[-1])]
    if np.iscomplexobj(data):
        data = np.abs(data)
    return [(data, meta, "image")]
