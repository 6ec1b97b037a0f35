"""Layer data for checkpoints and NIfTI images, without Qt: what the readers and the sample data hand to napari.

A checkpoint opens as its cached lattice (finer than the training grid where the budgets allow; from the cache
file beside it when one is valid) shown as a volume. The lattice is planned once, when the file opens, on a probe
of the model's speed; building it would hold napari up, so unless the cache holds it the file opens with a small
preview lattice (built within :data:`PREVIEW_SECONDS`) and the full one replaces it from a background thread
(``_lattices``).
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
from medinr.render.lattice import file_sha256, load_lattice, run_steps, seconds_per_point
from napari_plugin._lattices import cache_file, full_lattice_steps
from napari_plugin._window import display_for

#: Longest build of the preview lattice a file opens with (seconds, estimated from the probe).
PREVIEW_SECONDS = 0.03
#: World points of the speed probe that plans the lattices (a few ms for a fast model).
PROBE_POINTS = 4096

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


@dataclass
class LatticePlan:
    """The lattice a checkpoint opens with, whether it is final, and the full lattice to build if not."""

    lattice: CachedLattice
    final: bool
    full: Geometry


def open_lattice(image: ContinuousImage, path: str | None, background: bool = True) -> LatticePlan:
    """The lattice to show when ``image`` opens: the cached full lattice, else a preview (see the module docstring).

    A cache file coarser than the plan (written when the machine was busier) serves as the preview. The full
    lattice is built here when that fits the preview's budget, or when there is no ``background`` thread to
    build it later (no Qt application: the plain reader functions).
    """
    per_point = seconds_per_point(image, probe=PROBE_POINTS)
    full = plan_lattice(image, point_seconds=per_point)
    cache = cache_file(path)
    if path is not None and cache is not None and cache.is_file():
        try:
            cached = load_lattice(cache, file_sha256(path))
        except MedinrError:
            cached = None  # stale or foreign: rebuilt in the background
        if cached is not None:
            final = cached.spacing_mm <= full.spacing[: full.ndim].max() * (1 + 1e-6)
            return LatticePlan(cached, final, cached.geometry if final else full)
    if not background or per_point * float(np.prod(full.shape)) <= PREVIEW_SECONDS:
        return LatticePlan(run_steps(full_lattice_steps(image, path, full)), True, full)
    preview = plan_lattice(image, seconds=PREVIEW_SECONDS, finer=1, point_seconds=per_point)
    return LatticePlan(build_lattice(image, preview), False, full)


def volume_layer(image: ContinuousImage, lattice: CachedLattice, name: str, meta: dict) -> LayerData:
    """The lattice as an image layer at its world position, coloured for its default component.

    Its contrast limits are the data range (napari then spans the slider over it); the slicer's window presets
    start from a tissue window instead.
    """
    comp = resolve_component(image, "auto")
    volume = lattice.volume(comp)
    shown = display_for(image.kind, comp, volume)
    label = {"intensity": name, "complex": f"{name} |m|", "displacement": f"{name} |u| mm"}.get(image.kind, name)
    kwargs = {
        "name": label,
        "affine": napari_affine(lattice.geometry),
        "metadata": {**meta, ROLE_KEY: "volume", AFFINE_KEY: lattice.geometry.affine},
        "colormap": shown.colormap,
        "contrast_limits": shown.data_range,
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
        plan = open_lattice(image, path, background=False)
        lattice, final = plan.lattice, plan.final
    meta = {
        CHECKPOINT_KEY: image,
        "medinr_path": path,
        "medinr_description": image.describe(),
        "medinr_pending": not final,
    }
    return [volume_layer(image, lattice, name, meta)]


@dataclass
class Opened:
    """A checkpoint file as it opens: the image, its lattice plan (first lattice, final or not) and its layers."""

    image: ContinuousImage
    plan: LatticePlan
    layers: list[LayerData]


def open_checkpoint(path: str | os.PathLike, background: bool = True) -> Opened:
    """Load a ``.inr`` file (CPU), plan its lattices (see :func:`open_lattice`), and make its layers."""
    return open_loaded(load_checkpoint(path, device="cpu"), path, background)


def open_loaded(image: ContinuousImage, path: str | os.PathLike, background: bool = True) -> Opened:
    """:func:`open_checkpoint` of a checkpoint already loaded from ``path``."""
    plan = open_lattice(image, str(path), background)
    name = os.path.basename(str(path)).removesuffix(".inr")
    return Opened(image, plan, checkpoint_layers(image, name, path, plan.lattice, plan.final))


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
