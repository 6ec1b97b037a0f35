"""The latency section of ``render.py``: exact-frame times of the sample and of default fits, then the viewer's
latency in a real napari window (``viewer_latency.py``), as a table per checkpoint: median, worst, target."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCAN = ROOT / "sample_scans" / "mni152_t1_2mm.nii.gz"
#: Targets of issue 19 (ms): metric -> (target, what the number is).
TARGETS = {
    "work": (16, "main-thread work per plane change (excl. window repaints)"),
    "paint": (None, "window repaints per plane change (main thread)"),
    "first": (50, "first frame on screen after a plane change"),
    "exact": (300, "exact frame on screen after a plane change"),
    "exact_preset": (300, "of which on a preset's plane (offset steps, no tilt)"),
    "exact_tilted": (300, "of which on a tilted plane"),
    "exact_compute": (300, "exact frame computed (worker)"),
    "drag": (50, "longest event-loop gap, 25-step Shift-drag"),
    "cold": (100, "longest event-loop gap, cold open (no cache) until the exact frame of the full lattice"),
}


def make_fits(folder: Path, steps: int) -> dict[str, Path]:
    """A default 3D fit and a default 2D fit (one axial slice) of the MNI T1, made with ``medinr fit``."""
    fits = {"default 3D fit": ("fit3d", []), "default 2D fit": ("fit2d", ["--slice", "47", "--axis", "2"])}
    out = {}
    for name, (sub, extra) in fits.items():
        command = [sys.executable, "-m", "pipelines.cli", "fit", str(SCAN), "--steps", str(steps), "--quiet"]
        subprocess.run([*command, *extra, "--out", str(folder / sub)], check=True, cwd=ROOT)
        out[name] = folder / sub / "model.inr"
    return out


def exact_frame_seconds(path: Path, repeats: int, size: int = 512) -> tuple[list[float], str]:
    """Exact frames of a 512x512 oblique plane (3D) or of the image's own plane (2D), seconds each."""
    from medinr.checkpoint import load_checkpoint
    from medinr.render import default_plane, fit_fov_to_shape, render_plane

    image = load_checkpoint(path)
    spec = default_plane(image, "1,1,2", 0.0, (10, -15)) if image.ndim == 3 else default_plane(image)
    plane = fit_fov_to_shape(spec, (size, size))
    render_plane(image, plane, (size, size))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        render_plane(image, plane, (size, size))
        times.append(time.perf_counter() - start)
    return times, f"{image.model.family} {image.ndim}D, {image.model.num_parameters():,} parameters"


def latency_section(args: Any, gui: bool) -> None:
    from napari_plugin._sample_data import SHIPPED

    folder = Path(tempfile.mkdtemp(prefix="medinr-bench-"))
    os.environ["MEDINR_CACHE"] = str(folder / "cache")  # every open below is cold
    cases = {f"sample ({SHIPPED.name})": SHIPPED, **make_fits(folder, args.latency_fit_steps)}
    print(f"Exact frames ({args.size}x{args.size}; 3D: an oblique plane; 2D: the image's plane), median of 5:\n")
    print("| checkpoint | model | exact frame ms (median / worst) | target |\n|---|---|---|---|")
    for name, path in cases.items():
        times, what = exact_frame_seconds(path, 5, args.size)
        print(f"| {name} | {what} | {_ms(times)} | 300 |", flush=True)
    if not gui:
        return
    import viewer_latency as vl

    print("\nIn a napari window with the slicer docked (canvas 910 x 606):\n")
    print("| checkpoint | metric | median ms | worst ms | target ms | met |\n|---|---|---|---|---|---|")
    for name, path in cases.items():
        result = vl.measure(str(path), changes=4 if args.quick else args.changes)
        for line in _rows(name, result):
            print(line, flush=True)
    for line in _anchor_rows(vl.napari_anchor(_anchor_volume(), changes=4 if args.quick else args.changes)):
        print(line, flush=True)


#: The anchor's image: the 1 mm MNI T1 that the sample checkpoint was fitted to, as napari shows any volume.
ANCHOR_SCAN = ROOT / "sample_scans" / "mni152_t1_1mm.nii.gz"


def _anchor_volume():
    from medinr.io import load_image

    return load_image(ANCHOR_SCAN)[0]


def _anchor_rows(result: dict) -> list[str]:
    """napari's own image layer: the same metrics where they exist (a slice step for a plane change)."""
    name = f"anchor: napari's own image layer ({ANCHOR_SCAN.name}, axial slice steps)"
    values = {"work": result["work"], "first": result["first"], "drag": [result["drag"]], "cold": [result["cold"]]}
    labels = {"work": TARGETS["work"][1].replace("plane change", "slice step"),
              "first": "slice on screen after a slice step", "drag": "longest event-loop gap, 25 slice steps at 60 Hz",
              "cold": "longest event-loop gap, add_image until its first slice is on screen"}
    rows = []
    for key, label in labels.items():
        v = values[key]
        target = TARGETS[key][0]
        med, worst = statistics.median(v) * 1000, max(v) * 1000
        rows.append(f"| {name} | {label} | {med:.0f} | {worst:.0f} | {target} | (anchor) |")
    return rows


def _rows(name: str, result: dict) -> list[str]:
    values: dict[str, list[float]] = dict(result["changes"])
    values.pop("repaints", None)
    if "drag" in result:
        values["drag"] = [result["drag"]["gap"]]
    values["cold"] = [result["cold"]["gap"]]
    rows = []
    for key, (target, label) in TARGETS.items():
        v = values.get(key)
        if not v:
            continue
        med, worst = statistics.median(v) * 1000, max(v) * 1000
        met = "-" if target is None else ("yes" if worst <= target else "median only" if med <= target else "no")
        rows.append(f"| {name} | {label} | {med:.0f} | {worst:.0f} | {target or '-'} | {met} |")
    repaints = result["changes"].get("repaints")
    lattice = result["lattice"]
    rows.append(
        f"| {name} | window repaints per change (count); lattice {'x'.join(map(str, lattice[0]))} at "
        f"{lattice[1]:.3g} mm; drag drew {result.get('drag', {}).get('frames', '-')} frames | "
        f"{statistics.median(repaints):.0f} | {max(repaints):.0f} | - | - |"
    )
    return rows


def _ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f}"
