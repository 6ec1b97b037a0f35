"""THE writer of every command's output folder: images, checkpoints, figures, then metrics.json.

Everything goes into the staging folder of :class:`medinr.outputs.OutputDir`, published as one step when the
whole result is written. ``metrics.json`` comes last: its ``timing`` includes the writing of the rest. Images and
checkpoints are written by :data:`WRITERS` threads while this thread draws the figures (or waits for a
:class:`~medinr.apps.drawer.Drawer` to draw them): the deflate (:mod:`medinr.gzipfile`) and SimpleITK's writer
release the GIL, and the figures are then the longest part.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from medinr.apps.drawer import Drawer
from medinr.apps.result import AppResult
from medinr.checkpoint import save_checkpoint
from medinr.io import atomic_path, save_image
from medinr.outputs import OutputDir
from medinr.registration.field import write_displacement
from medinr.textsafe import dumps_strict

#: Threads that write images and checkpoints (the figures are drawn meanwhile by the calling thread or a
#: :class:`~medinr.apps.drawer.Drawer`'s process).
WRITERS = 2


def write_json(path, data: dict) -> None:
    """A metrics file as strict JSON: non-finite numbers become "inf", "-inf" or "nan" (:mod:`medinr.textsafe`)."""
    text = dumps_strict(data, indent=2, sort_keys=True)
    with open(path, "w") as f:
        f.write(text + "\n")


def publish(result: AppResult, out: OutputDir, drawer: Drawer | None = None) -> None:
    """Write ``result`` into ``out`` (an entered :class:`~medinr.outputs.OutputDir`); the first error raised by any
    part is raised once every part has stopped (the staging folder is then discarded whole).

    With a ``drawer`` (:class:`medinr.apps.drawer.Drawer`, started before the work) the figures are drawn in its
    process; any it did not draw are drawn here.
    """
    start = time.perf_counter()
    figures = {figure.name: (figure.draw, {**figure.kwargs, figure.path_arg: out / figure.name})
               for figure in result.figures}
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="medinr-writer") as pool:
        jobs = [pool.submit(_write_image, out, image) for image in result.images]
        jobs += [pool.submit(save_checkpoint, out / name, c) for name, c in result.checkpoints.items()]
        drawn = drawer.draw([(name, draw, kwargs) for name, (draw, kwargs) in figures.items()]) if drawer else set()
        for name, (draw, kwargs) in figures.items():
            if name not in drawn:
                draw(**kwargs)
        for job in jobs:
            job.result()
    timing = {**result.timing, "writing": time.perf_counter() - start}
    write_json(out / "metrics.json", {**result.record, "timing": timing})


def _write_image(out: OutputDir, image) -> None:
    if image.kind == "displacement":
        write_displacement(out / image.name, image.array, image.geometry)
    else:
        save_image(out / image.name, image.array, image.geometry, dtype=image.dtype)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Window an image for display: its 0.5th..99.5th percentiles onto 0..255."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:  # a nearly constant image: use its full range, or any unit range for a constant
        lo, hi = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1.0
    return np.clip(np.round((image - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def publish_file(result: AppResult, path) -> None:
    """Write a one-image result to the file ``path``: a windowed grey PNG, or NIfTI with the slice's affine."""
    (image,) = result.images
    if image.kind == "png":
        # Pillow, not matplotlib's imsave: an 8-bit grey PNG needs no colour map, and a render command then does
        # not import matplotlib (0.3 s of its 1.8 s)
        from PIL import Image

        with atomic_path(path) as tmp:
            Image.fromarray(to_uint8(image.array)).save(tmp, format="PNG")  # uint8 2D: mode L
    else:
        save_image(path, image.array, image.geometry, dtype=image.dtype)
