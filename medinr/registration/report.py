"""report.png: fixed, moving, warped, differences before and after, the deformed grid and the Jacobian map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medinr.figures import save_png
from medinr.geometry import Geometry


def report_view(
    fixed: np.ndarray,
    moving_on_fixed: np.ndarray,
    warped: np.ndarray,
    displacement: np.ndarray,
    jacobian: np.ndarray,
    geometry: Geometry,
) -> dict:
    """What :func:`write_report` draws, as its keyword arguments: the middle slice (axial, k = const, in 3D; the
    images themselves in 2D) of each image, the in-plane displacement there in voxels of the fixed grid, its
    magnitude in mm, and the lowest det J of the whole field.

    ``moving_on_fixed`` is the moving image resampled on the fixed grid without deformation, so that the 'before'
    difference compares like with like. A few hundred kB instead of the volumes: a command draws the figure in
    another process (:class:`medinr.apps.drawer.Drawer`), and the 2 mm brain's volumes (24 MB) took 0.13 s to
    send it.
    """
    nd = geometry.ndim
    sl = (lambda a: a) if nd == 2 else (lambda a: np.take(a, a.shape[2] // 2, axis=2))
    u = displacement if nd == 2 else np.take(displacement, displacement.shape[2] // 2, axis=2)
    inv = np.linalg.inv(geometry.affine_nd[:nd, :nd])
    return {"fixed": sl(fixed), "moving_on_fixed": sl(moving_on_fixed), "warped": sl(warped),
            "jacobian": sl(jacobian), "voxel_shift": (u @ inv.T)[..., :2], "magnitude": np.linalg.norm(u, axis=-1),
            "det_min": float(jacobian.min())}


def write_report(
    path: str | Path,
    fixed: np.ndarray,
    moving_on_fixed: np.ndarray,
    warped: np.ndarray,
    jacobian: np.ndarray,
    voxel_shift: np.ndarray,
    magnitude: np.ndarray,
    det_min: float,
    title: str = "",
) -> None:
    """Save a 2x4 panel figure of one slice (:func:`report_view` gives the arguments) to ``path``.

    The deformed grid moves lines of constant voxel index by ``voxel_shift`` (in-plane, voxels).
    """
    # the figure API without pyplot: no backend to select, no global state (a batch worker may draw in a thread)
    from matplotlib.figure import Figure

    f, m, w, j = fixed, moving_on_fixed, warped, jacobian
    vmax = float(np.percentile(np.abs(np.concatenate([f.ravel(), m.ravel()])), 99.5)) or 1.0
    fig = Figure(figsize=(14, 7))
    axes = fig.subplots(2, 4)
    show = dict(cmap="gray", vmin=0, vmax=vmax, origin="lower")
    panels = [(f, "fixed"), (m, "moving (on fixed grid)"), (w, "warped moving")]
    for ax, (img, name) in zip(axes[0], panels):
        ax.imshow(img.T, **show)
        ax.set_title(name)
    dshow = dict(cmap="RdBu_r", vmin=-vmax / 2, vmax=vmax / 2, origin="lower")
    axes[0, 3].imshow((m - f).T, **dshow)
    axes[0, 3].set_title("moving - fixed (before)")
    axes[1, 0].imshow((w - f).T, **dshow)
    axes[1, 0].set_title("warped - fixed (after)")

    # deformed grid: lines of constant voxel index moved by the in-plane displacement (voxel units)
    ax = axes[1, 1]
    ax.imshow(f.T, **show)
    du = voxel_shift
    ii, jj = np.meshgrid(np.arange(f.shape[0]), np.arange(f.shape[1]), indexing="ij")
    pi, pj = ii + du[..., 0], jj + du[..., 1]
    step = max(1, min(f.shape) // 16)
    for r in range(0, f.shape[0], step):
        ax.plot(pi[r, :], pj[r, :], color="yellow", lw=0.6)
    for c in range(0, f.shape[1], step):
        ax.plot(pi[:, c], pj[:, c], color="yellow", lw=0.6)
    ax.set_title("deformed grid")
    im = axes[1, 2].imshow(magnitude.T, cmap="magma", origin="lower")
    axes[1, 2].set_title("|u| (mm)")
    fig.colorbar(im, ax=axes[1, 2], fraction=0.046)
    im = axes[1, 3].imshow(j.T, cmap="coolwarm", vmin=0.0, vmax=2.0, origin="lower")
    axes[1, 3].set_title(f"det J (min {det_min:.2f})")
    fig.colorbar(im, ax=axes[1, 3], fraction=0.046)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout drew the whole figure once more to measure it (60 ms of a 2 mm registration)
    fig.subplots_adjust(left=0.01, right=0.95, bottom=0.01, top=0.9 if title else 0.95, wspace=0.05, hspace=0.12)
    save_png(fig, path, dpi=80)
