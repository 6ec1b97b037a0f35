"""Latency of a 512x512 oblique slice for every registered model family, next to trilinear interpolation.

Run: ``python bench/render.py [--threads 2] [--repeats 3] [--size 512] [--device cpu]``. Untrained weights at each
family's default size (latency does not depend on training). Prints a Markdown table: the first, coarse frame
(stride 4 of the progressive render, what the viewer shows at once) and the full frame (coarse pass included),
median of ``--repeats`` runs after one warm-up. Target for the default viewing model on 2 CPU cores: coarse
<= 100 ms, full <= 500 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medinr.continuous import ContinuousImage  # noqa: E402
from medinr.io import load_image  # noqa: E402
from medinr.models import MODEL_REGISTRY, build_model  # noqa: E402
from medinr.render import default_plane, fit_fov_to_shape, render_progressive  # noqa: E402

#: The light hash grid the plugin's sample uses (napari_plugin/_sample_data.py): the default viewing model.
VIEWING_MODEL = {"levels": 8, "log2_table_size": 14, "base_resolution": 8, "max_resolution": 96, "hidden": 32}
SCAN = Path(__file__).resolve().parents[1] / "sample_scans" / "mni152_t1_2mm.nii.gz"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, lazily built caches such as a lattice output)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_family(
    name: str, geometry, plane, shape, repeats: int, device: torch.device, compile: bool = False, options=None
) -> dict:
    label = name if options is None else f"{name} {options}"
    options = dict(options or {})
    if MODEL_REGISTRY[name].lattice_bound:
        options.setdefault("lattice", list(geometry.shape))
    model = build_model(name, 3, 1, **options).to(device).eval()
    ckpt = ContinuousImage(model, geometry)

    def coarse():
        next(render_progressive(ckpt, plane, shape, strides=(4, 1), device=device, compile=compile))

    def full():
        for _ in render_progressive(ckpt, plane, shape, strides=(4, 1), device=device, compile=compile):
            pass

    first = time.perf_counter()
    full()  # includes a lattice-bound model's one-off whole-lattice pass, or compilation
    first = time.perf_counter() - first
    return {
        "model": label + (" (torch.compile)" if compile else ""),
        "params": sum(p.numel() for p in model.parameters()),
        "coarse": _time(coarse, repeats),
        "full": _time(full, repeats),
        "first": first,
        "note": "lattice-bound: interpolated from its grid output" if model.lattice_bound else "",
        "compile": compile,
    }


def bench_interpolation(volume: np.ndarray, geometry, plane, shape, repeats: int) -> dict:
    from scipy.ndimage import map_coordinates

    def at(stride: int):
        pts = plane.world_points(shape)[::stride, ::stride]
        ijk = geometry.world_to_voxel(pts)
        return map_coordinates(volume, np.moveaxis(ijk, -1, 0), order=1, mode="constant")

    return {
        "model": "map_coordinates (trilinear, training grid)",
        "params": 0,
        "coarse": _time(lambda: at(4), repeats),
        "full": _time(lambda: at(1), repeats),
        "first": 0.0,
        "note": "scipy.ndimage, order=1",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", default=None, help="comma-separated subset (default: all registered)")
    parser.add_argument("--compiled", default="hashgrid,siren", help="families also timed with torch.compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    volume, geometry = load_image(SCAN)
    shape = (args.size, args.size)
    plane = fit_fov_to_shape(
        default_plane(ContinuousImage(build_model("siren", 3, 1), geometry), "1,1,2", 0.0, (10, -15)), shape
    )
    families = args.families.split(",") if args.families else sorted(MODEL_REGISTRY)
    rows = [bench_interpolation(volume, geometry, plane, shape, args.repeats)]
    runs = [(f, False, None) for f in families] + [(f, True, None) for f in args.compiled.split(",") if f in families]
    if "hashgrid" in families:  # the viewing model: the sample's light hash grid, eager and compiled
        runs += [("hashgrid", False, VIEWING_MODEL), ("hashgrid", True, VIEWING_MODEL)]
    for name, comp, opts in runs:
        if name.startswith("test_"):
            continue
        try:
            rows.append(bench_family(name, geometry, plane, shape, args.repeats, device, comp, opts))
        except Exception as exc:  # a family that cannot be built at its defaults is reported, not fatal
            rows.append(
                {
                    "model": name,
                    "params": 0,
                    "coarse": float("nan"),
                    "full": float("nan"),
                    "first": 0.0,
                    "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:60]}",
                }
            )
    print(
        f"Oblique {args.size}x{args.size} slice (normal 1,1,2 tilted 10/-15 deg) of the 98x116x94 MNI grid; "
        f"{args.threads} threads, {device}, median of {args.repeats}. Coarse = first frame (stride 4).\n"
    )
    print("| model | parameters | coarse frame (ms) | full frame (ms) | target met (<=100 / <=500 ms) | note |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ok = "yes" if r["coarse"] <= 0.1 and r["full"] <= 0.5 else "no"
        slow_first = r["first"] > 1.5 * r["full"] + 0.05
        extra = f"first render {r['first']:.1f} s (one-off)" if slow_first else ""
        note = "; ".join(t for t in (r["note"], extra) if t)
        print(f"| {r['model']} | {r['params']:,} | {r['coarse'] * 1000:.0f} | {r['full'] * 1000:.0f} | {ok} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
