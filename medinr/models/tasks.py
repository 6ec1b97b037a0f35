"""What a family starts with for a task: the one place outside each family where family defaults are chosen.

A task is what the network is fitted to: ``'image'`` (an image on its voxel grid, :mod:`medinr.image_fit`),
``'reconstruction'`` (a complex image through k-space, :mod:`medinr.mri.inr_recon`) or ``'deformation'``
(a displacement or velocity field, :mod:`medinr.registration`). Callers above the zoo never branch on a
family's name: they ask :func:`task_defaults` and build with what it gives.

The defaults gathered here were chosen on the benchmark panels (README, "Model zoo", "Reconstruction",
"Registration"); explicit options of the caller always win over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medinr.errors import MedinrError
from medinr.models.base import MODEL_REGISTRY

TASKS = ("image", "reconstruction", "deformation")

#: Reconstruction: options per family over its constructor's defaults (8 hash levels from 16: a coarser basis
#: than an image fit's, for data that constrain the image only through k-space).
_RECONSTRUCTION: dict[str, dict[str, Any]] = {
    "hashgrid": {"levels": 8, "features_per_level": 2, "base_resolution": 16, "hidden": 64, "layers": 2},
    "siren": {"hidden": 128, "layers": 3, "omega_0": 30.0},
}
#: Deformation: a small, smooth SIREN of world millimetres (3 x 64, first-layer frequency 16: IDIR's network at a
#: lower frequency, which kept the field smooth between the sampled points on the registration panel).
_DEFORMATION: dict[str, dict[str, Any]] = {
    "siren": {"hidden": 64, "layers": 3, "omega_0": 16.0, "hidden_omega": 30.0},
}


@dataclass(frozen=True)
class TaskDefaults:
    """A family's start for one task.

    Attributes
    ----------
    options : dict
        Build options: the family's defaults for the task with the caller's options on top.
    lr : float
        Adam base rate for this task (param groups scale it per part, :meth:`INR.param_groups`).
    smoothness : float
        'image' task: weight of the off-grid curvature prior (:func:`medinr.voxels.smoothness_penalty`).
    """

    options: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    smoothness: float = 0.0


def _family(family: str) -> type:
    if family not in MODEL_REGISTRY:
        raise MedinrError(f"unknown model '{family}'; choose one of: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[family]


def _reconstruction_options(family: str, shape: Sequence[int]) -> dict[str, Any]:
    opts = dict(_RECONSTRUCTION.get(family, {}))
    if family in ("hashgrid", "mrgrid"):  # the finest level resolves the grid itself (k-space reaches its edge)
        opts["max_resolution"] = int(max(shape))
    if family == "mrgrid":  # the coarsest level an eighth of the grid (32 at 256): a coarse-to-fine basis on any size
        opts["base_resolution"] = max(4, int(round(max(shape) / 8)))
    return opts


def task_defaults(family: str, task: str, shape: tuple[int, ...], options: dict | None = None) -> TaskDefaults:
    """The options, learning rate and prior weight a family starts a task with.

    Parameters
    ----------
    family : str
        A name in :data:`medinr.models.MODEL_REGISTRY`.
    task : {'image', 'reconstruction', 'deformation'}
    shape : tuple of int
        The grid the network is fitted on (the image, or the velocity / field grid).
    options : dict, optional
        The caller's options; they win over the family's defaults.

    Returns
    -------
    TaskDefaults
    """
    cls = _family(family)
    caller = dict(options or {})
    shape = tuple(int(n) for n in shape)
    if task == "image":
        lr = cls.image_lr if cls.image_lr is not None else cls.default_lr
        return TaskDefaults(cls.image_options(shape, caller), float(lr), float(cls.default_smoothness))
    if task == "reconstruction":
        return TaskDefaults({**_reconstruction_options(family, shape), **caller}, float(cls.default_lr))
    if task == "deformation":
        return TaskDefaults({**_DEFORMATION.get(family, {}), **caller}, float(cls.default_lr))
    raise MedinrError(f"unknown task '{task}' ({', '.join(TASKS)})")
