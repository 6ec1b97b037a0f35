"""Benchmark of the non-uniform SENSE operator's NUFFT backends on the CPU: finufft, torchkbnufft, mri-nufft.

Golden-angle radial 2D, 256 x 256, 8 coils, 48 and 96 spokes of 512 samples (2x oversampled readout),
complex64, torch with 2 threads (finufft with 2 threads). Per backend: plan (operator construction), forward
(image -> coil k-space, coil maps included), adjoint (coil-combined), and forward + backward (the gradient of
``||A x - y||^2`` with respect to the image, what one INR step costs in the data term). ``medinr-finufft`` and
``medinr-torchkbnufft`` are :class:`medinr.mri.nufft.NufftSenseOp` with each backend; ``mri-nufft`` is
``mrinufft``'s finufft operator with its own coil maps (its autograd needs deepinv, so its forward + backward
is timed as its ``op`` followed by ``adj_op``, which is what that autograd runs).

The machine may be shared: backends are interleaved within every repetition and each cell is the median over
repetitions; compare the ratios in one run.

    python bench/nufft.py              # 5 repetitions
    python bench/nufft.py --repeat 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medinr.mri.coils import birdcage_maps  # noqa: E402
from medinr.mri.nufft import NufftSenseOp, to_radians  # noqa: E402
from medinr.mri.trajectories import golden_angle_radial  # noqa: E402

GRID = (256, 256)
COILS = 8
#: finufft's usual single-precision settings (mri-nufft's too), against medinr's (medinr.mri.nufft.FINUFFT_SETTINGS)
LIBRARY_DEFAULTS = {"eps": 1e-6, "upsampfac": 2.0}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def medinr_case(backend: str, traj: np.ndarray, maps: np.ndarray, x: np.ndarray, settings: dict | None = None):
    """Closures timing one NufftSenseOp backend (``settings``: finufft's single-precision options instead of ours)."""
    mps = torch.from_numpy(maps)
    holder = {}

    def plan():
        holder["op"] = NufftSenseOp(mps, traj, backend)
        if settings is not None:
            holder["op"].nufft.engine.settings[torch.complex64] = settings
        holder["op"].nufft.prepare()

    plan()
    op = holder["op"]
    xt = torch.from_numpy(x)
    y = op(xt).detach()

    def fwd_bwd():
        xg = xt.clone().requires_grad_(True)
        loss = (op(xg) - y).abs().pow(2).sum()
        loss.backward()

    return {"plan": plan, "forward": lambda: op(xt), "adjoint": lambda: op.H(y), "forward+backward": fwd_bwd}


def mrinufft_case(traj: np.ndarray, maps: np.ndarray, x: np.ndarray):
    """Closures timing mri-nufft's finufft operator (coil maps inside, numpy in and out)."""
    from mrinufft import get_operator

    samples = to_radians(traj.reshape(-1, 2), GRID).astype(np.float32)
    holder = {}

    def plan():
        holder["op"] = get_operator("finufft")(samples, GRID, n_coils=COILS, smaps=maps, n_trans=COILS, nthreads=2)

    plan()
    op = holder["op"]
    y = op.op(x)
    return {"plan": plan, "forward": lambda: op.op(x), "adjoint": lambda: op.adj_op(y),
            "forward+backward": lambda: op.adj_op(op.op(x) - y)}


def run(repeat: int) -> dict:
    maps = birdcage_maps(GRID, COILS)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(GRID) + 1j * rng.standard_normal(GRID)).astype(np.complex64)
    results: dict = {}
    for spokes in (48, 96):
        traj = golden_angle_radial(spokes, GRID)
        cases = {
            "medinr-finufft": medinr_case("finufft", traj, maps, x),
            "medinr-finufft (2x grid, eps 1e-6)": medinr_case("finufft", traj, maps, x, LIBRARY_DEFAULTS),
            "medinr-torchkbnufft": medinr_case("torchkbnufft", traj, maps, x),
            "mri-nufft (finufft)": mrinufft_case(traj, maps, x),
        }
        times = {(name, op): [] for name in cases for op in cases[name]}
        for r in range(repeat):
            names = list(cases)
            names = names[r % len(names):] + names[: r % len(names)]  # rotate the order: fair on a shared machine
            for name in names:
                for op, fn in cases[name].items():
                    times[(name, op)].append(_timed(fn))
        results[spokes] = {key: statistics.median(v) for key, v in times.items()}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.repeat)
    ops = ("plan", "forward", "adjoint", "forward+backward")
    print(f"NUFFT backends, 256x256, {COILS} coils, 512 samples per spoke, complex64, {args.threads} threads, "
          f"median of {args.repeat} (seconds; ratio to medinr-finufft)")
    print("| spokes | backend | " + " | ".join(ops) + " |")
    print("|---:|---|" + "---:|" * len(ops))
    for spokes, cells in results.items():
        for name in sorted({name for name, _ in cells}, key=lambda n: (n != "medinr-finufft", n)):
            row = []
            for op in ops:
                t, ref = cells[(name, op)], cells[("medinr-finufft", op)]
                row.append(f"{t:.4f} ({t / ref:.1f}x)")
            print(f"| {spokes} | {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
