"""Benchmark of the model zoo off its samples: 2x zoom against interpolation, withheld pixels, throughput.

Every family at its default size and settings (``fit_image`` defaults: footprint-mean fitting, 10 % held-out
voxels choosing the stopping step) on a panel of real images:

- (a) **2x zoom**: the image is block-averaged 2x (2 mm voxels, each the mean of its 2x2(x2) block, as the
  2 mm MNI file is of the 1 mm one), fitted, and rendered at the original 1 mm voxel centres (the same world
  points); PSNR against the original image, also inside a tissue mask, beside cubic and linear interpolation of
  the 2 mm image (``scipy.ndimage.map_coordinates`` order 3 / 1 at the same world points);
- (b) **withheld pixels** (2D cases): 30 % of the original pixels, drawn at random, are never shown to the fit;
  PSNR of its prediction there (the footprint mean, as fitted) beside scattered-data interpolation of the known
  70 % (``scipy.interpolate.griddata``, cubic Clough-Tocher and linear);
- (c) training PSNR (voxels in the loss), parameters, forward and forward+backward throughput (Mcoord/s, on
  16384 random points, or the whole lattice for a lattice-bound family), CPU and wall seconds of the zoom fit.

The fit never sees the truth it is scored on. PSNR uses the truth's maximum as peak (fastMRI convention).

Run: ``python bench/models.py`` (full panel: the dipy coronal slice, axial/coronal/sagittal slices of the
1 mm MNI T1, and the 2 mm MNI T1 volume compared at 1 mm); ``--quick`` for development (the coronal slice
and a 48^3 crop of the volume, fewer steps). One Markdown table on stdout, then the targets of issue 10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import interpolate, ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medinr.geometry import Geometry  # noqa: E402
from medinr.image_fit import fit_image  # noqa: E402
from medinr.io import load_image, take_slice  # noqa: E402
from medinr.metrics import psnr, tissue_mask  # noqa: E402
from medinr.models import MODEL_REGISTRY  # noqa: E402
from medinr.voxels import evaluate_footprint, footprint_offsets  # noqa: E402

SAMPLES = ROOT / "sample_scans"
#: Fraction of pixels withheld in (b).
WITHHELD = 0.3


@dataclass
class Case:
    """One panel image: the truth on its grid and, for zoom, its 2x block mean on the coarse grid."""

    name: str
    truth: np.ndarray
    geometry: Geometry
    coarse: np.ndarray
    coarse_geometry: Geometry

    @property
    def ndim(self) -> int:
        return self.geometry.ndim


def block_mean(image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """2x block mean (even crop first) and the grid whose voxel centres are the blocks' centres."""
    even = tuple(slice(0, n - n % 2) for n in image.shape)
    image = image[even]
    d = image.ndim
    coarse = image.reshape([v for n in image.shape for v in (n // 2, 2)]).mean(axis=tuple(range(1, 2 * d, 2)))
    step = np.eye(4)
    step[:d, :d] *= 2.0
    step[:d, 3] = 0.5
    return coarse, Geometry(coarse.shape, geometry.affine @ step)


def _even(image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    even = tuple(slice(0, n - n % 2) for n in image.shape)
    return image[even], Geometry(image[even].shape, geometry.affine)


def panel(quick: bool, names: list[str] | None) -> list[Case]:
    """The panel of issue 10 (``quick``: the coronal slice and a 48^3 crop of the 2 mm volume)."""
    cases = []
    slice_img, slice_geom = _even(*load_image(SAMPLES / "t1_coronal_slice.nii.gz"))
    cases.append(Case("dipy coronal", slice_img, slice_geom, *block_mean(slice_img, slice_geom)))
    volume, vgeom = load_image(SAMPLES / "mni152_t1_1mm.nii.gz")
    volume = volume.astype(np.float32)
    centre = [n // 2 for n in volume.shape]
    for name, axis in (("MNI sagittal", 0), ("MNI coronal", 1), ("MNI axial", 2)):
        img, _ = take_slice(volume, vgeom, centre[axis], axis)
        # In its own plane (1 mm pixels, x-y): a 2D geometry's world frame is measured from its own first
        # voxel when the plane is oblique to x-y, so a coarse grid of a sagittal slice would sit 0.5 mm off.
        img, geom = _even(img, Geometry(img.shape))
        cases.append(Case(name, img, geom, *block_mean(img, geom)))
    coarse, cgeom = load_image(SAMPLES / "mni152_t1_2mm.nii.gz")
    truth, tgeom = _even(volume, vgeom)
    name = "MNI 3D 2mm->1mm"
    if quick:
        start = [n // 2 - 24 for n in coarse.shape]
        coarse, cgeom = _crop(coarse.astype(np.float32), cgeom, start, 48)
        truth, tgeom = _crop(truth, tgeom, [2 * s for s in start], 96)
        name = "MNI 3D crop 48^3 2mm->1mm"
    cases.append(Case(name, truth, tgeom, coarse.astype(np.float32), cgeom))
    if quick:
        cases = [cases[0], cases[-1]]
    if names:
        cases = [c for c in cases if any(n.lower() in c.name.lower() for n in names)]
    return cases


def _crop(image: np.ndarray, geometry: Geometry, start: list[int], size: int) -> tuple[np.ndarray, Geometry]:
    sl = tuple(slice(s, s + size) for s in start)
    affine = geometry.affine.copy()
    affine[:3, 3] = geometry.voxel_to_world(np.asarray(start, dtype=np.float64))
    return image[sl], Geometry(image[sl].shape, affine)


def interpolated(case: Case, order: int) -> np.ndarray:
    """Spline interpolation (order 3 cubic, 1 linear) of the coarse image at the truth's voxel centres."""
    ijk = case.geometry.voxel_grid(dtype=torch.float64).numpy()
    coarse_ijk = case.coarse_geometry.world_to_voxel(case.geometry.voxel_to_world(ijk))
    points = np.moveaxis(coarse_ijk, -1, 0)
    return ndimage.map_coordinates(case.coarse.astype(np.float64), points, order=order, mode="nearest")


def scores(truth: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    return psnr(truth, estimate), psnr(truth, estimate, mask)


def withheld_split(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """The known 70 % of the pixels (True) for (b); the same for every method."""
    return np.random.default_rng(seed).random(shape) >= WITHHELD


def withheld_baseline(case: Case, known: np.ndarray, method: str) -> float:
    """PSNR at the withheld pixels of scattered-data interpolation of the known ones."""
    pts = np.argwhere(known)
    missing = np.argwhere(~known)
    values = interpolate.griddata(pts, case.truth[known], missing, method=method)
    nearest = interpolate.griddata(pts, case.truth[known], missing, method="nearest")
    values = np.where(np.isfinite(values), values, nearest)  # outside the convex hull
    return psnr(case.truth[~known], values)


def timed(fn, min_seconds: float = 1.0, min_reps: int = 2) -> float:
    """Seconds per call of ``fn`` after one warm-up call."""
    fn()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - start) / reps


def throughput(model, ndim: int, chunk: int = 16384) -> tuple[float, float]:
    """(forward, forward+backward) coordinates per second of a fitted model, Mcoord/s."""
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(chunk, ndim, generator=gen) * 2 - 1
    model.train()
    if model.lattice_bound:
        n = int(np.prod(model.lattice))

        def forward() -> None:
            with torch.no_grad():
                model.lattice_output()

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            model.lattice_output().square().mean().backward()
    else:
        n = chunk

        def forward() -> None:
            model.evaluate(coords, chunk=chunk)

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            model(coords).square().mean().backward()

    fwd, fwd_bwd = n / timed(forward) / 1e6, n / timed(forward_backward) / 1e6
    model.eval()
    return fwd, fwd_bwd


#: The default KAN before issue 10 (Fourier features, [64, 32, 32, 1], grid 8): 0.10 Mcoord/s forward+backward.
OLD_KAN = {"encoding": "fourier", "encoding_options": {"n_frequencies": 32, "sigma": 2.0}, "widths": [32, 32]}


def kan_speed() -> list[str]:
    """Forward+backward throughput of KAN layouts and spline paths on 16384 random 2D points (Mcoord/s)."""
    from medinr.models import build_model

    lines = ["| KAN | spline path | parameters | fwd (Mcoord/s) | fwd+bwd (Mcoord/s) |", "|---|---|---:|---:|---:|"]
    layouts = {"old default layout": OLD_KAN, "default (grid encoding, [16])": {}}
    for name, options in layouts.items():
        for method in ("dense", "fused"):
            model = build_model("kan", 2, 1, method=method, **options)
            fwd, fwd_bwd = throughput(model, 2)
            lines.append(f"| {name} | {method} | {model.num_parameters():,} | {fwd:.3f} | {fwd_bwd:.3f} |")
    return lines


def _fit(image, geometry, family: str, args, known=None):
    options = dict(args.options.get(family, {}))
    kwargs = {"steps": args.steps} if args.steps else {}
    cpu, wall = time.process_time(), time.perf_counter()
    fitted = fit_image(image, geometry, model=family, seed=args.seed, progress=False, model_options=options,
                       known=known, **kwargs)
    return fitted, time.process_time() - cpu, time.perf_counter() - wall


def zoom_row(case: Case, family: str, args) -> dict:
    fitted, cpu, wall = _fit(case.coarse, case.coarse_geometry, family, args)
    estimate = fitted.on_grid(case.geometry)[..., 0]
    fwd, fwd_bwd = throughput(fitted.model, case.ndim)
    info = fitted.extra["fit"]
    return {
        "zoom": scores(case.truth, estimate, args.masks[case.name]),
        "train": info["train_psnr"], "holdout_voxels": info["holdout_psnr"], "steps": info["final_steps"],
        "params": fitted.model.num_parameters(), "fwd": fwd, "fwd_bwd": fwd_bwd, "cpu": cpu, "wall": wall,
    }


def withheld_row(case: Case, family: str, args, known: np.ndarray) -> float:
    fitted, _, _ = _fit(case.truth, case.geometry, family, args, known=known)
    coords = case.geometry.network_grid().reshape(-1, case.ndim)[torch.from_numpy(np.flatnonzero(~known))]
    offsets = footprint_offsets(tuple(fitted.geometry.shape), fitted.extra["fit"]["footprint"])
    pred = fitted.to_output_units(evaluate_footprint(fitted.model, coords, offsets))[:, 0].numpy()
    return psnr(case.truth[~known], pred)


def run_case(case: Case, families: list[str], args) -> list[dict]:
    mask = tissue_mask(case.truth)
    args.masks[case.name] = mask
    rows = [{"case": case.name, "method": f"{name} interpolation",
             "zoom": scores(case.truth, interpolated(case, order), mask)}
            for name, order in (("cubic", 3), ("linear", 1))]
    known = withheld_split(case.truth.shape) if case.ndim == 2 and not args.no_withheld else None
    if known is not None:
        for row, method in zip(rows, ("cubic", "linear")):
            row["withheld"] = withheld_baseline(case, known, method)
    for family in families:
        row = {"case": case.name, "method": family, **zoom_row(case, family, args)}
        if known is not None:
            row["withheld"] = withheld_row(case, family, args, known)
        rows.append(row)
        print(f"{case.name} / {family}: {json.dumps(_plain(row))}", file=sys.stderr, flush=True)
    return rows


def _plain(row: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}


def _cell(value, fmt: str = "{:.2f}") -> str:
    return "" if value is None else fmt.format(value)


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| image | method | 2x zoom PSNR (dB) | zoom, tissue (dB) | withheld 30 % (dB) | train (dB) | parameters "
        "| fwd (Mcoord/s) | fwd+bwd (Mcoord/s) | steps | CPU s | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        zoom = r["zoom"]
        lines.append(
            f"| {r['case']} | {r['method']} | {zoom[0]:.2f} | {zoom[1]:.2f} | {_cell(r.get('withheld'))} "
            f"| {_cell(r.get('train'))} | {_cell(r.get('params'), '{:,}')} | {_cell(r.get('fwd'), '{:.3f}')} "
            f"| {_cell(r.get('fwd_bwd'), '{:.3f}')} | {_cell(r.get('steps'), '{}')} | {_cell(r.get('cpu'), '{:.0f}')} "
            f"| {_cell(r.get('wall'), '{:.0f}')} |"
        )
    return lines


def targets(rows: list[dict], families: list[str]) -> list[str]:
    """Issue 10's targets on this run: every family >= cubic on zoom, best >= cubic + 1 dB, KAN within 1 dB."""
    out = []
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for case in cases:
        here = {r["method"]: r for r in rows if r["case"] == case}
        cubic = here["cubic interpolation"]["zoom"][0]
        fams = [f for f in families if f in here]
        below = [f"{f} ({here[f]['zoom'][0] - cubic:+.2f})" for f in fams if here[f]["zoom"][0] < cubic]
        best = max(fams, key=lambda f: here[f]["zoom"][0]) if fams else None
        line = f"- {case}: cubic {cubic:.2f} dB; " + (f"below cubic: {', '.join(below)}; " if below else
                                                       "every family >= cubic; ")
        if best:
            gain = here[best]["zoom"][0] - cubic
            line += f"best {best} {gain:+.2f} dB vs cubic ({'met' if gain >= 1 else 'not met'} +1 dB)"
        if "kan" in here and best:
            gap = here[best]["zoom"][0] - here["kan"]["zoom"][0]
            line += f"; kan {gap:.2f} dB under the best on zoom"
            if here["kan"].get("withheld") is not None:
                wbest = max(here[f]["withheld"] for f in fams)
                line += f", {wbest - here['kan']['withheld']:.2f} dB on withheld pixels"
            line += f", parameters {here['kan']['params']:,} vs {here[best]['params']:,}"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coronal slice + a 48^3 crop of the volume, 300 steps")
    parser.add_argument("--families", default=None, help="comma-separated families (default: all registered)")
    parser.add_argument("--images", default=None, help="comma-separated substrings of panel image names")
    parser.add_argument("--steps", type=int, default=None, help="override every family's steps (default: fit_image's)")
    parser.add_argument("--options", default="{}", help='JSON {family: {option: value}} over the defaults')
    parser.add_argument("--no-withheld", action="store_true", help="skip (b), the withheld-pixel fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--kan-speed", action="store_true", help="only the KAN throughput table (layouts, paths)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.options = json.loads(args.options)
    if args.kan_speed:
        print("\n".join(kan_speed()))
        return 0
    if args.quick and args.steps is None:
        args.steps = 300
    families = args.families.split(",") if args.families else sorted(
        n for n, c in MODEL_REGISTRY.items() if c.__module__.startswith("medinr."))
    unknown = [f for f in families if f not in MODEL_REGISTRY]
    if unknown:
        print(f"error: unknown families {unknown}; choose from {sorted(MODEL_REGISTRY)}", file=sys.stderr)
        return 2
    args.masks = {}
    rows = []
    for case in panel(args.quick, args.images.split(",") if args.images else None):
        rows += run_case(case, families, args)
    steps = f"{args.steps} steps (override)" if args.steps else "default steps"
    print(f"\nModel zoo off its samples: {steps}, seed {args.seed}, {torch.get_num_threads()} threads. "
          "Zoom: fitted on the 2x block mean, scored at the original voxels; withheld: 30 % of pixels never seen.\n")
    print("\n".join(table(rows)))
    print("\nTargets (issue 10):\n" + "\n".join(targets(rows, families)))
    if args.json:
        Path(args.json).write_text(json.dumps([_plain(r) for r in rows], indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
