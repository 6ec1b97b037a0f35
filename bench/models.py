"""Benchmark of the model zoo on the 256x256 coronal slice: size, throughput and PSNR after a wall-clock budget.

Run: ``python bench/models.py [--budget 30] [--families siren,hashgrid] [--threads 2]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medinr.fit import fit, seed_everything  # noqa: E402
from medinr.io import load_image  # noqa: E402
from medinr.metrics import psnr  # noqa: E402
from medinr.models import MODEL_REGISTRY, build_model  # noqa: E402
from medinr.models.compile import CompiledForward  # noqa: E402


def default_options(family: str, shape: tuple[int, ...]) -> dict:
    """Default config of a family on this image (only the lattice-bound family needs the image's grid)."""
    return {"lattice": list(shape)} if MODEL_REGISTRY[family].lattice_bound else {}


def timed(fn, min_seconds: float = 1.0, min_reps: int = 2) -> float:
    """Seconds per call of ``fn`` after one warm-up call, repeated for at least ``min_seconds``."""
    fn()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - start) / reps


def bench_family(
    family: str,
    image: torch.Tensor,
    grid: torch.Tensor,
    budget: float,
    chunk: int,
    batch: int,
    device: torch.device,
    compile_: bool = False,
) -> dict:
    seed = 0
    generator = seed_everything(seed)
    model = build_model(family, in_features=2, out_features=1, **default_options(family, tuple(image.shape))).to(device)
    coords = grid.reshape(-1, 2)
    target = image.reshape(-1, 1)
    n = coords.shape[0]
    lattice = model.lattice_bound

    def forward() -> None:
        if lattice:
            model._cache = None  # time a real lattice pass, not the cache
        model.evaluate(grid, chunk=chunk)

    def forward_backward() -> None:
        # One training step's worth of autograd work: full grid for lattice-bound models, else one chunk.
        x = coords if lattice else coords[torch.randint(0, n, (chunk,), generator=generator).to(device)]
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    fwd = n / timed(forward)
    fwd_bwd = (n if lattice else chunk) / timed(forward_backward)
    compiled = {}
    if compile_:
        model.eval()
        cf = CompiledForward(model)
        # Whole chunks only (n is a multiple of chunk here) so that a short last chunk does not recompile.
        starts = range(0, n - chunk + 1, chunk)

        def forward_compiled() -> None:
            if lattice:
                model._cache = None
            with torch.no_grad():
                for s in starts:
                    cf(coords[s : s + chunk])

        def forward_backward_compiled() -> None:
            x = coords if lattice else coords[torch.randint(0, n, (chunk,), generator=generator).to(device)]
            model.zero_grad(set_to_none=True)
            cf(x).square().mean().backward()

        compiled["fwd_c"] = len(starts) * chunk / timed(forward_compiled)
        compiled["fwd_bwd_c"] = (n if lattice else chunk) / timed(forward_backward_compiled)
        compiled["compiled"] = cf.compiled
        model.train()

    seed_everything(seed)
    model = build_model(family, in_features=2, out_features=1, **default_options(family, tuple(image.shape))).to(device)
    lr = model.default_lr

    def loss_fn(step: int) -> torch.Tensor:
        if lattice or batch >= n:
            x, y = coords, target
        else:
            idx = torch.randint(0, n, (batch,), generator=generator).to(device)
            x, y = coords[idx], target[idx]
        return torch.mean((model(x) - y) ** 2)

    # Many nominal steps so that the time budget, not the step count, ends the fit; cosine over them is ~constant.
    result = fit(
        model.param_groups(lr), loss_fn, steps=10**6, lr=lr, schedule="constant", progress=False, time_budget=budget
    )
    estimate = model.evaluate(grid, chunk=chunk)[..., 0].cpu().numpy()
    return {
        "family": family,
        "params": model.num_parameters(),
        "fwd": fwd,
        "fwd_bwd": fwd_bwd,
        "steps": result.steps,
        "seconds": result.seconds,
        "psnr": psnr(image.cpu().numpy(), estimate) if np.isfinite(estimate).all() else float("nan"),
        "lr": lr,
        **compiled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="wall-clock seconds of fitting per family")
    parser.add_argument("--families", default=None, help="comma-separated families (default: all registered)")
    parser.add_argument("--chunk", type=int, default=16384, help="coordinates per forward chunk / backward batch")
    parser.add_argument(
        "--batch", type=int, default=16384, help="random coordinates per training step (>= 65536: full grid)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="add torch.compile throughput columns")
    parser.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) first")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    families = args.families.split(",") if args.families else sorted(MODEL_REGISTRY)
    unknown = [f for f in families if f not in MODEL_REGISTRY]
    if unknown:
        print(f"error: unknown families {unknown}; choose from {sorted(MODEL_REGISTRY)}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    array, geometry = load_image(ROOT / "sample_scans" / "t1_coronal_slice.nii.gz")
    image = torch.from_numpy(array).to(device)
    grid = geometry.network_grid(device=device)

    rows = []
    for family in families:
        row = bench_family(family, image, grid, args.budget, args.chunk, args.batch, device, args.compile)
        rows.append(row)
        print(f"{family}: done", file=sys.stderr, flush=True)

    print(
        f"\nCoronal slice 256x256, device {args.device}, {torch.get_num_threads()} threads, chunk {args.chunk}, "
        f"training batch {min(args.batch, image.numel())} (lattice-bound: full lattice), budget {args.budget:g} s, "
        "constant lr = the family's default_lr.\n"
    )
    head = "| family | parameters | forward (Mcoord/s) | forward+backward (Mcoord/s) |"
    rule = "|---|---:|---:|---:|"
    if args.compile:
        head += " compiled fwd (Mcoord/s) | compiled fwd+bwd (Mcoord/s) |"
        rule += "---:|---:|"
    print(head + " steps in budget | PSNR (dB) |")
    print(rule + "---:|---:|")
    for r in rows:
        line = f"| {r['family']} | {r['params']:,} | {r['fwd'] / 1e6:.3f} | {r['fwd_bwd'] / 1e6:.3f} |"
        if args.compile:
            note = "" if r["compiled"] else " (eager fallback)"
            line += f" {r['fwd_c'] / 1e6:.3f}{note} | {r['fwd_bwd_c'] / 1e6:.3f}{note} |"
        print(line + f" {r['steps']} | {r['psnr']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
