"""The one place a fit asks for a family's defaults: build options, Adam rate and image prior weight per task.

Each family states its own in its typed config (:meth:`medinr.models.config.FamilyConfig.for_task`): an image fit
('image'), a k-space reconstruction ('reconstruction') or a displacement field ('deformation'). Callers put their
own options on top and never branch on the family name.
"""

from __future__ import annotations

from medinr.errors import MedinrError
from medinr.models.base import MODEL_REGISTRY
from medinr.models.config import TASKS, TaskDefaults

__all__ = ["TASKS", "TaskDefaults", "task_defaults"]


def task_defaults(family: str, task: str, shape: tuple[int, ...], options: dict | None = None) -> TaskDefaults:
    """The defaults of ``family`` for ``task`` on grid ``shape``, with the caller's ``options`` on top.

    Parameters
    ----------
    family : str
        A family of :data:`medinr.models.MODEL_REGISTRY`.
    task : {'image', 'reconstruction', 'deformation'}
    shape : tuple of int
        The grid the model is fitted on (voxels per axis); a 'deformation' needs none (``()``).
    options : dict, optional
        The caller's build options; they win over the family's (a dict option merges key by key).

    Raises
    ------
    MedinrError
        For an unknown family or task, or a grid that is not 2D or 3D.
    """
    if family not in MODEL_REGISTRY:
        raise MedinrError(f"unknown model '{family}'; choose one of: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[family].for_task(task, shape, options)

