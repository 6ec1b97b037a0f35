"""What an app returns: the images to write, the continuous images to save, the record, the timing, the figures.

Plain data (arrays, geometries, dicts and module-level drawing functions), so that a result can travel back
from a batch worker and :func:`medinr.apps.writer.publish` can write it anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medinr.geometry import Geometry

if TYPE_CHECKING:  # the commands' results are described without torch (medinr info of an image)
    from medinr.continuous import ContinuousImage


@dataclass
class ImageOutput:
    """An array to write as ``name`` on ``geometry`` (NIfTI), as ``dtype``; ``kind`` 'displacement' writes an
    ITK vector field (LPS millimetres, :func:`medinr.registration.field.write_displacement`)."""

    name: str
    array: np.ndarray
    geometry: Geometry
    dtype: Any = np.float32
    kind: str = "image"


@dataclass
class Figure:
    """A figure ``name`` drawn by ``draw(**kwargs, path=...)`` (``path_arg`` names the output's argument)."""

    name: str
    draw: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    path_arg: str = "path"


@dataclass
class AppResult:
    """One run's outcome.

    Attributes
    ----------
    images : list of ImageOutput
    checkpoints : dict
        File name -> :class:`~medinr.continuous.ContinuousImage` to save.
    record : dict
        Every choice (``settings``, the request) and every result; metrics.json holds it.
    timing : dict
        Wall seconds per stage (set-up, each fit stage, validation, baselines); metrics.json holds it apart,
        under ``timing``, with the time the writing took.
    figures : list of Figure
    summary : str
        The one line a command prints.
    """

    images: list[ImageOutput] = field(default_factory=list)
    checkpoints: dict[str, ContinuousImage] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    summary: str = ""
