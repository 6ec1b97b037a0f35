"""Report figures: panels of images (middle slices for volumes) written as PNG with matplotlib's Agg backend."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

#: zlib level of the report PNGs (Pillow's default: 6): a 2 mm registration's report is encoded in 30 ms instead of
#: 85 ms and is 12 % larger (515 kB); the figure is the last part of a command's writing to finish.
PNG_COMPRESSION = 1


def save_png(fig, path: str | os.PathLike, dpi: float) -> None:
    """Write a matplotlib figure as a PNG at ``dpi`` (:data:`PNG_COMPRESSION`)."""
    fig.savefig(path, dpi=dpi, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})


def display_slice(image: np.ndarray, axis: int = 2) -> np.ndarray:
    """A 2D view of an image: itself if 2D, else its middle slice along ``axis``; rotated so that the
    first array axis runs left-right and the second bottom-top (radiological screens show RAS this way)."""
    img = np.abs(image) if np.iscomplexobj(image) else np.asarray(image)
    if img.ndim == 3:
        img = np.take(img, img.shape[axis] // 2, axis=axis)
    return np.rot90(img)


def panel_figure(
    panels: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str | None = None,
    error_of: Mapping[str, tuple[str, str]] | None = None,
    ncols: int | None = None,
    axis: int = 2,
) -> None:
    """Write a PNG with one panel per image.

    Parameters
    ----------
    panels : mapping name -> array
        Images in display order; grey panels share the range of the first one.
    path : path-like
        PNG to write.
    title : str, optional
    error_of : mapping name -> (a, b), optional
        Extra panels showing |a - b| with a hot colour map, sharing one range.
    ncols : int, optional
    axis : int
        Slicing axis for volumes.
    """
    items = [(k, display_slice(v, axis), "gray") for k, v in panels.items()]
    errors = [(k, display_slice(np.abs(np.abs(panels[a]) - np.abs(panels[b])), axis), "inferno")
              for k, (a, b) in (error_of or {}).items()]
    all_items = items + errors
    n = len(all_items)
    ncols = ncols or min(n, 4)
    nrows = int(np.ceil(n / ncols))
    # the figure API without pyplot: no backend to select, no global state, and no matplotlib import until a
    # figure is drawn (a command may draw it in a :class:`medinr.apps.drawer.Drawer`)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    vmax = float(np.percentile(items[0][1], 99.5)) if items else 1.0
    vmin = min(0.0, float(np.percentile(items[0][1], 0.5))) if items else 0.0  # negative images (e.g. CT) too
    emax = max((float(np.percentile(e[1], 99.5)) for e in errors), default=1.0) or 1.0
    for ax, (name, img, cmap) in zip(axes.ravel(), all_items):
        lo, hi = (0.0, emax) if cmap != "gray" else (vmin, vmax)
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1.0, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
