"""Fit an INR to an image on its voxel grid: the building block of ``medinr fit`` and of reconstruction priors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.fit import fit, seed_everything
from medinr.geometry import Geometry
from medinr.intensity import IntensityScale
from medinr.metrics import psnr
from medinr.models import INR, MODEL_REGISTRY, build_model

#: Lattice-bound models (Conv-INR) run on the whole image every step; beyond this many voxels that is refused.
_LATTICE_VOXEL_LIMIT = 1 << 21


def fit_image(
    image: np.ndarray,
    geometry: Geometry,
    model: str | INR = "hashgrid",
    steps: int = 1000,
    lr: float | None = None,
    batch_size: int = 1 << 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    time_budget: float | None = None,
) -> ContinuousImage:
    """Fit an INR to a real image sampled on ``geometry``'s grid.

    Parameters
    ----------
    image : ndarray
        Real array of ``geometry.shape`` in its own units (normalised internally by the 99.9th percentile).
    geometry : Geometry
        Where the voxels are; the checkpoint keeps it so the fit can be placed in world millimetres.
    model : str or INR
        A family name for :func:`medinr.models.build_model`, or a built model (``in_features`` = ndim).
    steps : int
        Adam steps (cosine schedule).
    lr : float, optional
        Learning rate; defaults to the family's ``default_lr``.
    batch_size : int
        Random voxels per step; the whole grid when the image has fewer voxels or the model is lattice-bound.
    seed : int
        Seeds initialisation and batch draws.
    model_options : dict, optional
        Extra options for the family.
    time_budget : float, optional
        Stop after this many seconds.

    Returns
    -------
    ContinuousImage
        In the image's units on its grid; ``history`` holds the fit's losses and metrics.
    """
    image = np.asarray(image)
    if image.shape != tuple(geometry.shape):
        raise MedinrError(f"image shape {image.shape} does not match geometry shape {geometry.shape}")
    if np.iscomplexobj(image):
        raise MedinrError("fit_image expects a real image; use the reconstruction pipeline for complex data")
    if not np.all(np.isfinite(image)):
        raise MedinrError("the image contains NaN or infinite values")
    device = torch.device(device)
    generator = seed_everything(seed)
    scale = IntensityScale.robust(image)
    if isinstance(model, str):
        options = dict(model_options or {})
        family = model
        if family in MODEL_REGISTRY and MODEL_REGISTRY[family].lattice_bound:
            options.setdefault("lattice", list(geometry.shape))
        model = build_model(family, geometry.ndim, 1, **options)
    if model.in_features != geometry.ndim:
        raise MedinrError(f"model takes {model.in_features}D coordinates but the image is {geometry.ndim}D")
    model = model.to(device).train()
    lr = float(lr if lr is not None else model.default_lr)

    coords = geometry.network_grid(device=device).reshape(-1, geometry.ndim)
    target = torch.as_tensor(scale.normalise(image), dtype=torch.float32, device=device).reshape(-1, 1)
    n = coords.shape[0]
    full_grid = model.lattice_bound or n <= max(batch_size, 1)
    if model.lattice_bound and n > _LATTICE_VOXEL_LIMIT:
        raise MedinrError(f"{model.family} is trained on its whole lattice; {n} voxels is too many")

    def loss_fn(step: int) -> torch.Tensor:
        if full_grid:
            pred, ref = model(coords), target
        else:
            idx = torch.randint(0, n, (batch_size,), generator=generator).to(device)
            pred, ref = model(coords[idx]), target[idx]
        loss = torch.mean((pred - ref) ** 2)
        reg = model.regularization()
        return loss + reg if reg is not None else loss

    norm_image = scale.normalise(image)

    def current_psnr() -> float:
        return psnr(norm_image, ContinuousImage(model, geometry).on_grid()[..., 0])

    result = fit(
        model.param_groups(lr),
        loss_fn,
        steps=steps,
        lr=lr,
        metrics={"psnr": current_psnr} if progress else None,
        metric_every=max(50, steps // 10),
        progress=progress,
        description=f"fit {model.family}",
        time_budget=time_budget,
    )
    model.eval()
    output = OutputMeaning("intensity", scale=scale.scale, offset=scale.offset)
    return ContinuousImage(model=model, geometry=geometry, output=output, frame="network", history=result)
