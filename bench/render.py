"""The viewer's two tiers per model family and for the shipped sample, and its latency in a real napari window.

Run (one command; the latency section needs a display, so under Xvfb, with the default llvmpipe driver):

    xvfb-run -a -s "-screen 0 1920x1200x24" python bench/render.py [--threads 2] [--quick] [--sections ...]

Section ``fidelity`` (every registered family at its default size, fitted to the 2 mm MNI T1 for ``--fit-steps``
steps or ``--fit-seconds``; ``--quick``: 30 steps, fewer families; and the shipped sample INR):

- PSNR (dB) against the source volume at the rendered world points (trilinear), inside the brain (tissue labels
  with holes filled), on 512x512 axial and oblique planes, for the exact and the cached tier;
- first frame: 512x512 oblique from the cached lattice (median of ``--repeats``); exact frame: the same plane
  evaluated by the network; cache: time to build the lattice (as the viewer plans it), its step and memory.

Section ``latency`` (the sample, and a default 3D and 2D fit made here with ``medinr fit --steps
--latency-fit-steps``): the exact-frame time of each, then in a real napari window with the slicer docked, on a
910 x 606 canvas (see ``viewer_latency.py`` for how each figure is taken): a cold open (no lattice cache), plane
changes, a 25-step Shift-drag. Targets (issue 19, quiet machine): main-thread work per plane change <= 16 ms;
first frame on screen <= 50 ms; no event-loop gap over 50 ms during the drag; exact frame <= 300 ms; a cold open
never blocks the UI over 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# as the napari plugin does before torch loads (napari_plugin/__init__.py): passive OpenMP waiting
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# napari's preferences of this run in a temporary file: the plugin registers itself as the NIfTI reader there
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(prefix="medinr-bench-"), "settings.yaml"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from medinr.checkpoint import load_checkpoint  # noqa: E402
from medinr.continuous import ContinuousImage  # noqa: E402
from medinr.image_fit import fit_image  # noqa: E402
from medinr.io import load_image  # noqa: E402
from medinr.models import MODEL_REGISTRY  # noqa: E402
from medinr.render import build_lattice, default_plane, fit_fov_to_shape, plan_lattice, render_plane  # noqa: E402
from medinr.render.fidelity import brain_region, plane_psnr  # noqa: E402

SCAN = ROOT / "sample_scans" / "mni152_t1_2mm.nii.gz"
LABELS = ROOT / "sample_scans" / "mni152_labels_2mm.nii.gz"
QUICK_FAMILIES = ("hashgrid", "mrgrid", "siren")


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def planes(image: ContinuousImage, size: int) -> dict:
    shape = (size, size)
    return {
        "axial": fit_fov_to_shape(default_plane(image, "axial"), shape),
        "oblique": fit_fov_to_shape(default_plane(image, "1,1,2", 0.0, (10, -15)), shape),
    }


def fitted_family(name: str, volume: np.ndarray, geometry, steps: int, seconds: float) -> ContinuousImage:
    """A family at its default size, fitted to the scan with the zoo's defaults for a bounded time."""
    return fit_image(volume, geometry, name, steps=steps, progress=False, time_budget=seconds)


def measure(image: ContinuousImage, source, brain, size: int, repeats: int) -> dict:
    """Fidelity, frame times and cache numbers of one image (see the module docstring)."""
    views = planes(image, size)
    shape = (size, size)
    start = time.perf_counter()
    lattice = build_lattice(image, plan_lattice(image))
    row = {"build": time.perf_counter() - start, "memory": lattice.nbytes, "spacing": lattice.spacing_mm}
    row["first"] = _median_time(lambda: lattice.render(views["oblique"], shape), repeats)
    row["exact"] = _median_time(lambda: render_plane(image, views["oblique"], shape), max(1, repeats // 2))
    for name, plane in views.items():
        row[f"{name}_exact"] = plane_psnr(render_plane(image, plane, shape), source, brain, plane)
        row[f"{name}_fast"] = plane_psnr(lattice.render(plane, shape), source, brain, plane)
    row["lattice"] = lattice
    return row


def _cases(args, volume, geometry) -> list[tuple[str, object]]:
    from napari_plugin._sample_data import SHIPPED

    cases: list[tuple[str, object]] = [(f"sample ({SHIPPED.name})", lambda: load_checkpoint(SHIPPED))]
    families = (
        args.families.split(",") if args.families else sorted(f for f in MODEL_REGISTRY if not f.startswith("test_"))
    )
    if args.quick and not args.families:
        families = [f for f in families if f in QUICK_FAMILIES]
    steps, seconds = (30, 30.0) if args.quick else (args.fit_steps, args.fit_seconds)
    for name in families:
        cases.append((name, lambda n=name: fitted_family(n, volume, geometry, steps, seconds)))
    return cases


def _row_text(name: str, image, r: dict) -> str:
    ok = r["first"] <= 0.05 and r["build"] <= 10
    psnr = " / ".join(f"{r[k]:.1f}" for k in ("axial_exact", "oblique_exact", "axial_fast", "oblique_fast"))
    return (
        f"| {name} | {image.model.num_parameters():,} | {psnr} | {r['first'] * 1000:.0f} | {r['exact'] * 1000:.0f} | "
        f"{r['build']:.1f} ({r['spacing']:.2g} mm) | {r['memory'] / 1e6:.0f} | {'yes' if ok else 'no'} |"
    )


def fidelity_section(args) -> None:
    volume, geometry = load_image(SCAN)
    labels, lgeom = load_image(LABELS)
    source, brain = (volume, geometry), (brain_region(labels), lgeom)
    lines = []
    for name, make in _cases(args, volume, geometry):
        try:
            image = make()
            lines.append(_row_text(name, image, measure(image, source, brain, args.size, args.repeats)))
        except Exception as exc:  # a family that fails is reported, not fatal
            lines.append(f"| {name} | - | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | | | | |")
        print(lines[-1], file=sys.stderr, flush=True)
    print(
        f"{args.size}x{args.size} planes of the 2 mm MNI T1 (98x116x94); {args.threads} threads; families fitted "
        f"{'30 steps' if args.quick else f'{args.fit_steps} steps or {args.fit_seconds:.0f} s'}; times are wall "
        f"(median of {args.repeats}). PSNR in the brain against the scan at the rendered points.\n"
    )
    print(
        "| model | parameters | PSNR dB exact axial / oblique, cached axial / oblique | first frame (ms) | "
        "exact frame (ms) | cache build s (lattice step) | cache MB | targets (first <= 50 ms, build <= 10 s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--families", default=None, help="comma-separated subset (default: all registered)")
    parser.add_argument("--fit-steps", type=int, default=300, help="fit steps per family (default 300)")
    parser.add_argument("--fit-seconds", type=float, default=120.0, help="fit time limit per family (default 120)")
    parser.add_argument("--quick", action="store_true", help="3 families, 30 fit steps; fewer plane changes")
    parser.add_argument("--sections", default="fidelity,latency", help="fidelity, latency or both (default)")
    parser.add_argument("--latency-fit-steps", type=int, default=100, help="steps of the latency fits (default 100)")
    parser.add_argument("--changes", type=int, default=12, help="plane changes measured per checkpoint (default 12)")
    parser.add_argument("--no-gui", action="store_true", help="skip the measurements in a napari window")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    gui = "latency" in sections and not args.no_gui and display
    if gui:
        from viewer_latency import make_app

        make_app()  # before napari makes the QApplication: the probe times every event
    torch.set_num_threads(args.threads)
    if "fidelity" in sections:
        fidelity_section(args)
    if "latency" in sections:
        from latency_section import latency_section

        latency_section(args, gui)
    return 0


if __name__ == "__main__":
    sys.exit(main())
