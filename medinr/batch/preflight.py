"""``medinr batch --dry-run``: read every input of a case with the reader its command uses, before any work.

Each reader checks a file's header first (:mod:`medinr.filecheck`: type, dimensions, declared size against the
file and the memory budget, geometry, data elsewhere) and then reads its values, so a missing, damaged or hostile
file is found here as it would be found by the case itself, with the same line. Checkpoints are read to their
header only (no weights). Nothing is fitted and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medinr.apps.requests import (
    MASK_KINDS,
    FitRequest,
    ReconstructRequest,
    RegisterRequest,
    RenderRequest,
)
from medinr.errors import MedinrError
from medinr.io import load_image, take_slice
from medinr.validation import check_image_size


def _image(path: str, slice_index: int | None = None, axis: int = 2) -> tuple[int, ...]:
    image, geometry = load_image(path)
    if slice_index is not None:
        image, geometry = take_slice(image, geometry, slice_index, axis)
    check_image_size(geometry.shape, path)
    return geometry.shape


def _reconstruct(request: ReconstructRequest) -> None:
    from medinr.mri.kspace_io import is_kspace_file, load_kspace
    from medinr.mri.masks import load_mask_file

    a, path = request.acquisition, Path(request.input)
    if not path.exists():
        raise MedinrError(f"file not found: {path}")
    if is_kspace_file(path):
        shape = load_kspace(path, a.slice, keep_oversampling=a.keep_oversampling).geometry.shape
        check_image_size(shape, request.input)
    else:
        shape = _image(request.input, a.slice, a.axis)
    if request.prior is not None:
        load_image(request.prior)
    if a.mask is not None and a.mask not in MASK_KINDS:
        if not (os.path.sep in a.mask or Path(a.mask).suffix):  # the rule of medinr.mri.masks.make_mask
            raise MedinrError(f"unknown mask '{a.mask}': choose random, equispaced, poisson or give a mask file")
        load_mask_file(a.mask, shape)


def check_inputs(request: Any) -> None:
    """Read the inputs of ``request`` as its app will; one :class:`MedinrError` line for the first bad one."""
    if isinstance(request, FitRequest):
        _image(request.image, request.slice, request.axis)
    elif isinstance(request, ReconstructRequest):
        _reconstruct(request)
    elif isinstance(request, RegisterRequest):
        from medinr.apps.register import load_inputs

        load_inputs(request)
    elif isinstance(request, RenderRequest):
        from medinr.checkpoint import read_header

        read_header(request.checkpoint)
    else:
        raise TypeError(f"no input check for {type(request).__name__}")
