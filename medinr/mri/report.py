"""The report figure of a reconstruction: reference, each method, error maps, the mask (or the non-Cartesian
trajectory) and the INR's self-calibration.

The last column plots the held-out validation error along the INR's regularisation path with the chosen step
marked (and the TV weight on a second axis), so that every choice the method made can be seen.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medinr.figures import save_png


def _middle(a: np.ndarray) -> np.ndarray:
    """A 2D view: the image itself, or the middle slice of the last axis of a volume."""
    return a if a.ndim == 2 else a[..., a.shape[-1] // 2]


def _caption(name: str, scores: dict[str, dict[str, float]] | None) -> str:
    if scores and name in scores:
        return f"{name}\n{scores[name]['psnr_tissue']:.2f} dB (tissue)"
    return name


def _plot_curve(ax: Any, details: dict[str, Any]) -> None:
    """Validation error (log) and TV weight along the path; the chosen point in red."""
    points = details.get("validation_curve") or []
    if not points:
        ax.text(0.5, 0.5, details.get("self_calibration", "no self-calibration"), ha="center", va="center",
                fontsize=7, wrap=True)
        ax.set_title("self-calibration", fontsize=8)
        return
    steps = [p["step"] for p in points]
    ax.semilogy(steps, [p["validation_error"] for p in points], color="tab:blue", lw=1)
    chosen = details["chosen"]
    ax.semilogy([chosen["step"]], [chosen["validation_error"]], "o", color="tab:red", ms=4)
    ax.set_xlabel("step", fontsize=7)
    ax.set_ylabel("held-out error (noise units)", fontsize=7, color="tab:blue")
    ax.tick_params(labelsize=6)
    twin = ax.twinx()
    twin.semilogy(steps, [max(p["tv"], 1e-12) for p in points], color="tab:gray", lw=0.8, ls="--")
    twin.set_ylabel("TV weight", fontsize=7, color="tab:gray")
    twin.tick_params(labelsize=6)
    ax.set_title(f"chosen: step {chosen['step']}, TV {chosen['tv']:.3g},\nwavelet {chosen['wavelet']:.3g}, "
                 f"{chosen['levels']} levels", fontsize=7)


def _plot_trajectory(ax: Any, traj: np.ndarray) -> None:
    """Every readout of a trajectory (1/FOV units) as a line in the k-space plane (the first two axes; the
    first partition of a stack of stars), at most 200 of them."""
    traj = np.asarray(traj)
    if traj.shape[-1] == 3:
        traj = traj[traj[:, 0, 2] == traj[0, 0, 2]]
    step = max(1, traj.shape[0] // 200)
    for readout in traj[::step]:
        ax.plot(readout[:, 0], readout[:, 1], lw=0.4, color="black")
    ax.set_aspect("equal")
    ax.set_title(f"trajectory ({traj.shape[0]} readouts)", fontsize=8)


def save_report(
    path: str | os.PathLike,
    images: dict[str, np.ndarray],
    mask: np.ndarray | None,
    reference: np.ndarray | None = None,
    scores: dict[str, dict[str, float]] | None = None,
    inr_details: dict[str, Any] | None = None,
    trajectory: np.ndarray | None = None,
) -> None:
    """Write a PNG with one column per method (magnitude on top, |error| below when there is a reference).

    Parameters
    ----------
    path : path-like
    images : dict name -> magnitude image (input units)
    mask : sampling mask (shown in the mask column), or None with a ``trajectory``
    reference : magnitude reference, optional
    scores : dict name -> image metrics (captions show the tissue PSNR), optional
    inr_details : the INR's ``extra`` (validation curve and choices), optional: adds the curve column
    trajectory : ndarray ``(readouts, samples, d)`` in 1/FOV units, optional: drawn in place of the mask
    """
    # the figure API without pyplot: no backend to select, no global state
    from matplotlib.figure import Figure

    columns = (["reference"] if reference is not None else []) + list(images)
    columns += ["trajectory"] if trajectory is not None else ["mask"]
    columns += ["curve"] if inr_details is not None else []
    rows = 2 if reference is not None else 1
    fig = Figure(figsize=(2.6 * len(columns), 2.8 * rows))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    vmax = float(np.percentile(_middle(reference if reference is not None else next(iter(images.values()))), 99.5))
    for c, name in enumerate(columns):
        ax = axes[0, c]
        if name == "curve":
            _plot_curve(ax, inr_details or {})
            continue
        if name == "trajectory":
            _plot_trajectory(ax, trajectory)
            continue
        if name == "mask":
            ax.imshow(_middle(mask.astype(float)).T, cmap="gray", origin="lower", interpolation="nearest")
        else:
            img = reference if name == "reference" else images[name]
            ax.imshow(_middle(img).T, cmap="gray", vmin=0, vmax=vmax, origin="lower")
        ax.set_title(_caption(name, scores), fontsize=8)
        if reference is not None and name in images:
            err = np.abs(_middle(images[name]) - _middle(reference)).T
            axes[1, c].imshow(err, cmap="magma", vmin=0, vmax=0.2 * vmax, origin="lower")
            axes[1, c].set_title(f"|error| {name}", fontsize=8)
    for c, ax in enumerate(axes.flat):
        if columns[c % len(columns)] not in ("curve", "trajectory") or c >= len(columns):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off") if not ax.images else None
    fig.tight_layout()
    save_png(fig, path, dpi=90)
