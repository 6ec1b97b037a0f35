"""The report figure of a reconstruction: reference, each method, error maps and the sampling mask."""

from __future__ import annotations

import os

import numpy as np


def _middle(a: np.ndarray) -> np.ndarray:
    """A 2D view: the image itself, or the middle slice of the last axis of a volume."""
    return a if a.ndim == 2 else a[..., a.shape[-1] // 2]


def save_report(
    path: str | os.PathLike,
    images: dict[str, np.ndarray],
    mask: np.ndarray,
    reference: np.ndarray | None = None,
    titles: dict[str, str] | None = None,
) -> None:
    """Write a PNG with one column per method (magnitude on top, |error| below when there is a reference).

    Parameters
    ----------
    path : path-like
    images : dict name -> magnitude image (input units)
    mask : sampling mask (shown in the last column)
    reference : magnitude reference, optional
    titles : dict name -> caption (e.g. with PSNR), optional
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    titles = titles or {}
    columns = (["reference"] if reference is not None else []) + list(images) + ["mask"]
    rows = 2 if reference is not None else 1
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.6 * len(columns), 2.8 * rows), squeeze=False)
    vmax = float(np.percentile(_middle(reference if reference is not None else next(iter(images.values()))), 99.5))
    for c, name in enumerate(columns):
        ax = axes[0, c]
        if name == "mask":
            ax.imshow(_middle(mask.astype(float)).T, cmap="gray", origin="lower", interpolation="nearest")
        else:
            img = reference if name == "reference" else images[name]
            ax.imshow(_middle(img).T, cmap="gray", vmin=0, vmax=vmax, origin="lower")
        ax.set_title(titles.get(name, name), fontsize=8)
        if reference is not None:
            err_ax = axes[1, c]
            if name in images:
                err_ax.imshow(
                    np.abs(_middle(images[name]) - _middle(reference)).T,
                    cmap="magma",
                    vmin=0,
                    vmax=0.2 * vmax,
                    origin="lower",
                )
                err_ax.set_title(f"|error| {name}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off") if not ax.images else None
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
