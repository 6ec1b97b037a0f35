"""Plot of a KAN's learned edge activations phi_ji, one panel per layer, weak (prunable) edges faded."""

from __future__ import annotations

import os

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from medinr.figures import save_png
from medinr.io import atomic_path
from medinr.models.kan import KAN


@torch.no_grad()
def plot_activations(
    model: KAN,
    path: str | os.PathLike,
    coords: torch.Tensor | None = None,
    threshold: float = 1e-2,
    max_nodes: int = 16,
    n_points: int = 101,
    n_samples: int = 2048,
) -> None:
    """Write a PNG of the learned activations ``phi_ji`` of every layer of a :class:`~medinr.models.kan.KAN`.

    Each layer is one panel: a grid of cells, row ``j`` = output node, column ``i`` = input node, each cell
    showing ``phi_ji`` over the spline range [-1, 1] (every cell on its layer's common vertical scale). The
    opacity of a curve is its edge's L1 norm ``mean |phi_ji|`` relative to the layer's strongest edge; edges at
    or below ``threshold`` (those pruning would drop) are drawn faint grey.

    Parameters
    ----------
    model : KAN
    path : path-like
        PNG to write.
    coords : Tensor, optional
        ``(N, in_features)`` network coordinates on which the edge norms are measured (e.g. the fitted grid);
        default ``n_samples`` uniform random points of [-1, 1]^d.
    threshold : float
        Pruning threshold used to fade weak edges (default 1e-2).
    max_nodes : int
        Large layers show only their ``max_nodes`` strongest inputs and outputs (by their strongest edge).
    n_points : int
        Samples per curve.
    """
    param = next(model.parameters())
    if coords is None:
        gen = torch.Generator().manual_seed(0)
        coords = torch.rand(n_samples, model.in_features, generator=gen) * 2 - 1
    coords = coords.to(param.device, param.dtype).reshape(-1, model.in_features)
    scores = model.edge_scores(coords)
    xs = torch.linspace(-1.0, 1.0, n_points, device=param.device, dtype=param.dtype)

    n_layers = len(model.layers)
    # the figure API, not pyplot: importing this module leaves the user's matplotlib backend as it was
    fig = Figure(figsize=(4.2 * n_layers, 4.6))
    axes = fig.subplots(1, n_layers, squeeze=False)
    for index, (layer, score) in enumerate(zip(model.layers, scores)):
        ax = axes[0, index]
        outs = torch.argsort(score.amax(1), descending=True)[:max_nodes].sort().values
        ins = torch.argsort(score.amax(0), descending=True)[:max_nodes].sort().values
        # phi_ji(x) for every kept edge on the common abscissa: (n_points, n_out, n_in) -> kept rows/columns.
        grid_in = xs[:, None].expand(n_points, layer.n_in)
        phi = layer.edge_activations(grid_in)[:, outs][:, :, ins].cpu().numpy()
        sub = score[outs][:, ins].cpu().numpy()
        half = float(np.abs(phi).max()) or 1.0
        top = float(sub.max()) or 1.0
        segments, colors = [], []
        u = np.linspace(0.08, 0.92, n_points)
        for r in range(len(outs)):
            for c in range(len(ins)):
                y = len(outs) - 1 - r + 0.5 + 0.42 * phi[:, r, c] / half
                segments.append(np.column_stack([c + u, y]))
                strength = sub[r, c] / top
                if sub[r, c] <= threshold:
                    colors.append((0.6, 0.6, 0.6, 0.15))
                else:
                    colors.append((0.05, 0.2, 0.6, 0.25 + 0.75 * strength))
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.9))
        ax.set_xlim(0, len(ins))
        ax.set_ylim(0, len(outs))
        ax.set_xticks(np.arange(len(ins)) + 0.5, [str(int(i)) for i in ins], fontsize=5)
        ax.set_yticks(np.arange(len(outs)) + 0.5, [str(int(o)) for o in outs.flip(0)], fontsize=5)
        ax.set_xticks(np.arange(len(ins) + 1), minor=True)
        ax.set_yticks(np.arange(len(outs) + 1), minor=True)
        ax.grid(which="minor", color="0.85", linewidth=0.4)
        ax.tick_params(which="minor", length=0)
        shown = f" (strongest {len(outs)}x{len(ins)})" if (len(outs), len(ins)) != tuple(score.shape) else ""
        ax.set_title(
            f"layer {index}: {layer.n_in} -> {layer.n_out}{shown}\nphi on [-1, 1], scale +-{half:.2g}", fontsize=8
        )
        ax.set_xlabel("input node", fontsize=7)
        ax.set_ylabel("output node", fontsize=7)
    fig.suptitle(f"KAN activations (grid {model.config['grid']}, faded: |phi|_1 <= {threshold:g})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # no half-written PNG if drawing fails
        save_png(fig, tmp, dpi=130)
