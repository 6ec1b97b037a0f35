"""The image pair as the optimiser sees it: normalised intensity pyramids, soft label maps, points to draw.

Each image keeps its own grid and geometry; everything is sampled through world millimetres, so the two
images may differ in shape, voxel size and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.registration.svf import smoothed
from medinr.registration.transform import Warper


def normalise_intensity(
    image: np.ndarray, mask: np.ndarray | None = None, low: float = 0.5, high: float = 99.5
) -> tuple[np.ndarray, list[float]]:
    """Map the ``low``..``high`` percentiles (inside ``mask`` if given) onto 0..1, clipping outliers.

    Returns the normalised image and the two percentile values (input units).
    """
    values = image[mask > 0] if mask is not None and mask.shape == image.shape else image
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise MedinrError("the image has (almost) constant intensity: nothing to register")
    return np.clip((image - lo) / (hi - lo), -0.5, 1.5).astype(np.float32), [lo, hi]


def match_histogram(moving: np.ndarray, fixed: np.ndarray, threshold: float = 0.02, points: int = 256) -> np.ndarray:
    """Map the moving intensities onto the fixed ones by matching quantiles of their foregrounds.

    Both inputs are normalised to about 0..1; voxels at or below ``threshold`` (background) keep their value,
    the others go through the piecewise-linear map that sends each moving quantile to the fixed one.
    """
    fm, ff = moving > threshold, fixed > threshold
    if fm.sum() < points or ff.sum() < points:
        return moving
    q = np.linspace(0.0, 100.0, points)
    src, dst = np.percentile(moving[fm], q), np.percentile(fixed[ff], q)
    src = np.maximum.accumulate(src + np.arange(points) * 1e-9)  # strictly increasing for np.interp
    out = moving.copy()
    out[fm] = np.interp(moving[fm], src, dst)
    return out.astype(np.float32)


def check_labels(fixed_labels: np.ndarray, fixed_shape: tuple, moving_labels: np.ndarray, moving_shape: tuple) -> list:
    """The label values (non-zero, integers) both label images share; one clear error if they cannot be used."""
    for name, lab, shape in (("fixed", fixed_labels, fixed_shape), ("moving", moving_labels, moving_shape)):
        if lab.shape != tuple(shape):
            raise MedinrError(f"the {name} labels have shape {lab.shape} but the {name} image has {tuple(shape)}")
        if not np.isfinite(lab).all():
            raise MedinrError(f"the {name} labels hold NaN or infinite values")
    common = sorted(set(np.unique(np.rint(fixed_labels)).tolist()) & set(np.unique(np.rint(moving_labels)).tolist()))
    common = [int(v) for v in common if v != 0]
    if not common:
        raise MedinrError("the fixed and moving labels share no non-zero label value: nothing to overlap")
    return common


@dataclass
class Side:
    """One image of the pair: its smoothed intensity levels, optional one-hot labels and drawable voxels."""

    geometry: Geometry
    levels: list[Warper]
    candidates: torch.Tensor  # (M, ndim) voxel indices points are drawn around
    labels: Warper | None = None  # (C, *shape) one-hot of the shared label values, sampled linearly

    @classmethod
    def build(cls, image: np.ndarray, geometry: Geometry, sigmas, mask=None, labels=None, values=(), device="cpu"):
        """Smooth ``image`` (normalised) once per level (``sigmas`` in its own voxels) and index its mask."""
        levels = [Warper(smoothed(image, s), geometry, device) for s in sigmas]
        where = mask > 0 if mask is not None else np.ones(image.shape, dtype=bool)
        cand = torch.as_tensor(np.argwhere(where), dtype=torch.float32, device=device)
        onehot = None
        if labels is not None:
            lab = np.rint(labels)
            onehot = Warper(np.stack([(lab == v).astype(np.float32) for v in values]), geometry, device)
        return cls(geometry, levels, cand, onehot)

    def draw(self, n: int, generator: torch.Generator, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` random world points (mm) within half a voxel of the candidates, ``(n, W, ndim)`` with windows."""
        dev = self.candidates.device
        ndim = self.candidates.shape[1]
        idx = torch.randint(self.candidates.shape[0], (n,), generator=generator).to(dev)
        vox = self.candidates[idx] + torch.rand((n, ndim), generator=generator).to(dev) - 0.5
        if offsets is not None:
            vox = vox[:, None, :] + offsets[None]
        upper = torch.as_tensor(np.asarray(self.geometry.shape, dtype=np.float32) - 1, device=dev)
        return self.geometry.voxel_to_world(vox.clamp(min=torch.zeros_like(upper), max=upper))
