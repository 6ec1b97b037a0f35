"""npe2 writer: save the current slice or a resampled volume as NIfTI at its world position in mm."""

from __future__ import annotations

from typing import Any

import numpy as np

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import NIFTI_SUFFIXES, save_image
from napari_plugin._layers import AFFINE_KEY


def layer_affine(data: np.ndarray, meta: dict) -> np.ndarray:
    """4x4 RAS affine of the layer's data: medinr's own record, else napari's affine x scale/translate."""
    recorded = (meta.get("metadata") or {}).get(AFFINE_KEY)
    if recorded is not None:
        return np.asarray(recorded, dtype=np.float64)
    nd = np.asarray(data).ndim
    aff = np.asarray(meta.get("affine", np.eye(nd + 1)), dtype=np.float64)
    scale = np.asarray(meta.get("scale", np.ones(nd)), dtype=np.float64)
    translate = np.asarray(meta.get("translate", np.zeros(nd)), dtype=np.float64)
    st = np.eye(nd + 1)
    st[:nd, :nd] = np.diag(scale)
    st[:nd, nd] = translate
    full = aff @ st
    out = np.eye(4)
    out[:nd, :nd], out[:nd, 3] = full[:nd, :nd], full[:nd, nd]
    return out


def write_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer as NIfTI; returns the written path (napari's single-layer writer contract)."""
    if not str(path).lower().endswith(NIFTI_SUFFIXES):
        raise MedinrError(f"the NIfTI writer needs a .nii or .nii.gz name, got {path}")
    array = np.asarray(data, dtype=np.float32)
    if meta.get("rgb") or array.ndim not in (2, 3):
        raise MedinrError(f"only 2D or 3D grey-level layers can be saved as NIfTI, got shape {array.shape}")
    save_image(path, array, Geometry(array.shape, layer_affine(array, meta)))
    return [str(path)]
