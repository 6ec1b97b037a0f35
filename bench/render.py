"""The viewer's two tiers per model family and for the shipped sample: fidelity, speed, cache, UI responsiveness.

Run (one command; the event-loop column needs a display, so under Xvfb):

    xvfb-run -a -s "-screen 0 1280x1024x24" python bench/render.py [--threads 2] [--fit-seconds 120] [--quick]

For every registered family at its default size (fitted to the 2 mm MNI T1 for ``--fit-steps`` steps or
``--fit-seconds``, whichever ends first; ``--quick``: 30 steps, fewer families) and for the shipped sample INR:

- fidelity: PSNR (dB) against the source volume at the rendered world points (trilinear), inside the brain
  (tissue labels with holes filled), on 512x512 axial and oblique planes, for the exact and the cached tier;
- first frame: 512x512 oblique from the cached lattice (median of ``--repeats``); exact frame: the same plane
  evaluated by the network; cache: time to build the lattice (as the viewer plans it) and its memory;
- event loop: the longest gap between ticks of a 5 ms Qt timer while the real slicer widget draws, zooms and
  changes the plane (cached then exact frames in worker threads).

Targets (2 CPU cores): sample >= 38 dB on every plane, first frame <= 50 ms, exact <= 300 ms; every family
first frame <= 50 ms, cache build <= 10 s for the 2 mm brain; event loop never blocked > 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def event_loop_gap(image: ContinuousImage, lattice, name: str) -> float:
    """Longest gap (s) between 5 ms timer ticks while the slicer draws, zooms and tilts (real widget)."""
    import napari
    from qtpy.QtCore import QTimer

    from napari_plugin import _lattices
    from napari_plugin._layers import checkpoint_layers
    from napari_plugin._qt import SliceWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1100, 800)
    _lattices.offer(image, lattice, final=True)
    ((data, meta, _),) = checkpoint_layers(image, name, None, lattice, True)
    viewer.add_image(data, **meta)
    widget = SliceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    app = napari.qt.get_qapp()

    def wait_exact(count: int, limit: float = 120.0) -> None:
        end = time.perf_counter() + limit
        while widget.model.exact_count < count and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)

    wait_exact(1)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    for action in (
        lambda: setattr(widget.camera, "zoom", widget.camera.zoom * 2),
        lambda: widget.tilt_col.setValue(widget.tilt_col.value() + 10),
        lambda: widget.offset.setValue(widget.offset.value() + 6),
    ):
        count = widget.model.exact_count
        action()
        wait_exact(count + 1)
    timer.stop()
    viewer.close()
    return float(np.max(np.diff(ticks))) if len(ticks) > 1 else float("nan")


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


def _row_text(name: str, image, r: dict, gap: float) -> str:
    ok = r["first"] <= 0.05 and r["build"] <= 10 and (np.isnan(gap) or gap <= 0.05)
    psnr = " / ".join(f"{r[k]:.1f}" for k in ("axial_exact", "oblique_exact", "axial_fast", "oblique_fast"))
    return (
        f"| {name} | {image.model.num_parameters():,} | {psnr} | {r['first'] * 1000:.0f} | {r['exact'] * 1000:.0f} | "
        f"{r['build']:.1f} ({r['spacing']:.2g} mm) | {r['memory'] / 1e6:.0f} | "
        f"{'n/a' if np.isnan(gap) else f'{gap * 1000:.0f}'} | {'yes' if ok else 'no'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--families", default=None, help="comma-separated subset (default: all registered)")
    parser.add_argument("--fit-steps", type=int, default=300, help="fit steps per family (default 300)")
    parser.add_argument("--fit-seconds", type=float, default=120.0, help="fit time limit per family (default 120)")
    parser.add_argument("--quick", action="store_true", help="3 families, 30 fit steps")
    parser.add_argument("--no-gui", action="store_true", help="skip the event-loop measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    volume, geometry = load_image(SCAN)
    labels, lgeom = load_image(LABELS)
    source, brain = (volume, geometry), (brain_region(labels), lgeom)
    gui = not args.no_gui and bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    lines = []
    for name, make in _cases(args, volume, geometry):
        try:
            image = make()
            r = measure(image, source, brain, args.size, args.repeats)
            gap = event_loop_gap(image, r["lattice"], name.split()[0]) if gui else float("nan")
            lines.append(_row_text(name, image, r, gap))
        except Exception as exc:  # a family that fails is reported, not fatal
            lines.append(f"| {name} | - | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | | | | | |")
        print(lines[-1], file=sys.stderr, flush=True)
    print(
        f"{args.size}x{args.size} planes of the 2 mm MNI T1 (98x116x94); {args.threads} threads; families fitted "
        f"{'30 steps' if args.quick else f'{args.fit_steps} steps or {args.fit_seconds:.0f} s'}; times are wall "
        f"(median of {args.repeats}). PSNR in the brain against the scan at the rendered points.\n"
    )
    print(
        "| model | parameters | PSNR dB exact axial / oblique, cached axial / oblique | first frame (ms) | "
        "exact frame (ms) | cache build s (lattice step) | cache MB | event-loop max gap (ms) | "
        "targets (first <= 50 ms, build <= 10 s, gap <= 50 ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
