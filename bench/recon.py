"""Benchmark of MRI reconstruction over a panel: the self-calibrated INR against zero-filled and SigPy CS.

Every case runs every method through the library's one comparison (:func:`medinr.mri.compare.run_methods`,
what ``medinr reconstruct`` runs): zero-filled, L1-wavelet and TV with lambda chosen on the held-out split
(what a user gets) and with lambda chosen on the ground truth (``*_oracle``, the hard target), and the INR,
which never sees the ground truth. The panel:

- measured 2-coil GRE k-space (3T phantom, sample_scans/gre_2coil_kspace.npy), retrospectively undersampled
  2x, 3x (two mask seeds) and 4x (two seeds), centre 0.12, ESPIRiT maps, reference = RSS of the full data;
- real brain slices from two sources (axial, coronal and sagittal slices of the 1 mm MNI T1, the dipy
  coronal slice), 256 x 256, 8 simulated coils, ESPIRiT maps, complex noise at SNR 25 and 35 dB, 1D random
  masks at 4x (centre 0.08) and 8x (centre 0.04);
- one single-coil case (dipy coronal, 4x, SNR 35) and one 3D case (the 2 mm MNI T1 cropped to 64 x 80 x 64,
  8 coils with their true maps, SNR 30, 2D Poisson-disc undersampling of ky-kz at 8x, against SigPy's 3D
  L1-wavelet).

Prints one row per case (tissue PSNR/SSIM of every method, INR minus the best CS and minus the held-out CS,
INR wall and CPU seconds), then the median and worst case and the issue's targets.

    python bench/recon.py                 # the full panel (about an hour on an idle 2-core machine)
    python bench/recon.py --quick         # 4 cases for development
    python bench/recon.py --cases 'gre'   # the cases whose name matches a regular expression
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medinr.geometry import Geometry  # noqa: E402
from medinr.io import load_image, take_slice  # noqa: E402
from medinr.mri.compare import run_methods  # noqa: E402
from medinr.mri.config import preset_config  # noqa: E402
from medinr.mri.kspace_io import load_kspace  # noqa: E402
from medinr.mri.problem import ReconProblem, problem_from_image, problem_from_kspace  # noqa: E402

CENTER = {4: 0.08, 8: 0.04}
CS = ("l1wavelet", "tv")


@dataclass(frozen=True)
class Case:
    """One benchmark case: a source, an acceleration, noise, coils and a mask seed."""

    source: str  # 'gre', 'dipy', 'mni_axial', 'mni_coronal', 'mni_sagittal', 'mni_3d'
    accel: int
    snr: float | None = None
    coils: int = 8
    seed: int = 0

    @property
    def name(self) -> str:
        snr = f"_snr{self.snr:g}" if self.snr is not None else ""
        return f"{self.source}_{self.accel}x{snr}_{self.coils}c_s{self.seed}"


def panel() -> list[Case]:
    cases = [Case("gre", 2, coils=2), Case("gre", 3, coils=2), Case("gre", 3, coils=2, seed=1),
             Case("gre", 4, coils=2), Case("gre", 4, coils=2, seed=1)]
    for source in ("dipy", "mni_axial", "mni_coronal", "mni_sagittal"):
        for accel in (4, 8):
            for snr in (25.0, 35.0):
                cases.append(Case(source, accel, snr))
    return cases + [Case("dipy", 4, 35.0, coils=1), Case("mni_3d", 8, 30.0)]


QUICK = ("gre_3x_2c_s0", "dipy_4x_snr35_8c_s0", "mni_axial_8x_snr25_8c_s0", "dipy_4x_snr35_1c_s0")


def _canvas(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop/pad to ``size``^2 and scale to a maximum of 1."""
    out = np.zeros((size, size), np.float32)
    src = tuple(slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + min(n, size)) for n in image.shape)
    dst = tuple(slice(max(0, (size - n) // 2), max(0, (size - n) // 2) + min(n, size)) for n in image.shape)
    out[dst] = image[src]
    return out / out.max()


def _image(source: str, size: int) -> tuple[np.ndarray, Geometry]:
    if source == "dipy":
        image, _ = load_image(ROOT / "sample_scans" / "t1_coronal_slice.nii.gz")
        return _canvas(image, size), Geometry((size, size))
    if source == "mni_3d":
        volume, _ = load_image(ROOT / "sample_scans" / "mni152_t1_2mm.nii.gz")
        c = [n // 2 for n in volume.shape]
        crop = volume[c[0] - 32 : c[0] + 32, c[1] - 40 : c[1] + 40, c[2] - 32 : c[2] + 32].astype(np.float32)
        return crop / crop.max(), Geometry(crop.shape, np.diag([2.0, 2.0, 2.0, 1.0]))
    volume, geometry = load_image(ROOT / "sample_scans" / "mni152_t1_1mm.nii.gz")
    axis = {"mni_sagittal": 0, "mni_coronal": 1, "mni_axial": 2}[source]
    index = volume.shape[axis] // 2 + {0: 10, 1: 0, 2: -8}[axis]  # off the midline for the sagittal slice
    image, _ = take_slice(volume, geometry, index, axis=axis)
    return _canvas(image, size), Geometry((size, size))


def make_problem(case: Case, size: int) -> ReconProblem:
    if case.source == "gre":
        measured = load_kspace(ROOT / "sample_scans" / "gre_2coil_kspace.npy")
        return problem_from_kspace(measured, "random", case.accel, 0.12, "espirit", case.seed)
    image, geometry = _image(case.source, size)
    if case.source == "mni_3d":
        # the true (birdcage) maps: our 3D ESPIRiT leaves eigenvalues below its crop on a 6-8 line ky-kz box
        return problem_from_image(image, geometry, "poisson", case.accel, 0.12, case.coils, "simulated", case.snr,
                                  True, case.seed)
    return problem_from_image(image, geometry, "random", case.accel, CENTER[case.accel], case.coils, "espirit",
                              case.snr, True, case.seed)


def run_case(case: Case, args: argparse.Namespace) -> dict:
    problem = make_problem(case, args.size)
    config = preset_config(args.preset, **json.loads(args.inr))
    cs = ("l1wavelet",) if problem.geometry.ndim == 3 else CS
    methods = ("zero_filled", *cs, *(f"{m}_oracle" for m in cs), "inr")
    comparison = run_methods(problem, config, methods, case.seed, "cpu", cs_iterations=args.cs_iters)
    scores = comparison.scores()
    inr = comparison.results["inr"]
    best = max(scores[f"{m}_oracle"]["psnr_tissue"] for m in cs)
    held = max(scores[m]["psnr_tissue"] for m in cs)
    return {
        "case": case.name,
        "accel": case.accel,
        "accel_achieved": problem.mask.achieved_acceleration,
        "psnr_tissue": {n: s["psnr_tissue"] for n, s in scores.items()},
        "ssim_tissue": {n: s["ssim_tissue"] for n, s in scores.items()},
        "psnr": {n: s["psnr"] for n, s in scores.items()},
        "inr_minus_best_cs": scores["inr"]["psnr_tissue"] - best,
        "inr_minus_holdout_cs": scores["inr"]["psnr_tissue"] - held,
        "inr_wall_s": inr.seconds,
        "inr_cpu_s": inr.cpu_seconds,
        "inr_chosen": inr.details.get("chosen"),
        "noise": inr.details.get("noise"),
        "cs_lambdas": {n: r.details.get("lambda") for n, r in comparison.results.items() if "lambda" in r.details},
    }


def _row(r: dict) -> str:
    p, s = r["psnr_tissue"], r["ssim_tissue"]
    cs = " | ".join(f"{p.get(m, float('nan')):.2f} / {p.get(m + '_oracle', float('nan')):.2f}" for m in CS)
    return (f"| {r['case']} | {p['zero_filled']:.2f} | {cs} | {p['inr']:.2f} | {s['inr']:.3f} "
            f"| {r['inr_minus_best_cs']:+.2f} | {r['inr_minus_holdout_cs']:+.2f} | {r['inr_wall_s']:.0f} "
            f"| {r['inr_cpu_s']:.0f} |")


def summary(records: list[dict], threads: int) -> list[str]:
    """Median and worst case per acceleration, and the issue's targets."""
    lines = ["", "| group | cases | median INR - best CS | worst INR - best CS | worst INR - held-out CS |",
             "|---|---|---|---|---|"]
    groups = {"all": records, **{f"{a}x": [r for r in records if r["accel"] == a] for a in (2, 3, 4, 8)}}
    groups["measured GRE"] = [r for r in records if r["case"].startswith("gre")]
    for name, rs in groups.items():
        if rs:
            best = [r["inr_minus_best_cs"] for r in rs]
            held = [r["inr_minus_holdout_cs"] for r in rs]
            lines.append(f"| {name} | {len(rs)} | {statistics.median(best):+.2f} | {min(best):+.2f} "
                         f"| {min(held):+.2f} |")
    slices = [r for r in records if "3d" not in r["case"]]
    wall = max((r["inr_cpu_s"] / (1.7 if threads == 2 else 1.0) for r in slices), default=0.0)
    lines.append(f"\nslowest 2D INR: {wall:.0f} s (CPU seconds{' / 1.7' if threads == 2 else ''}, a wall-time "
                 "estimate for an idle 2-core machine; wall times above are as measured)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--cases", default=None, help="regular expression on case names")
    parser.add_argument("--preset", default="default", help="INR preset (fast, default, quality)")
    parser.add_argument("--inr", default="{}",
                        help="JSON overrides of InrReconConfig, e.g. '{\"path\": {\"steps\": 300}}'")
    parser.add_argument("--size", type=int, default=256, help="2D slice size (default 256)")
    parser.add_argument("--cs-iters", type=int, default=100, help="SigPy iterations per lambda (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [c for c in panel() if (not args.quick or c.name in QUICK)
             and (args.cases is None or re.search(args.cases, c.name))]
    print(f"preset {args.preset}, overrides {args.inr}, {args.threads} threads, {len(cases)} cases", file=sys.stderr)
    header = ("| case | zero-filled | L1-wavelet held-out / oracle | TV held-out / oracle | INR | INR SSIM "
              "| INR - best CS | INR - held-out CS | INR wall s | INR CPU s |")
    records, rows, start = [], [], time.perf_counter()
    for case in cases:
        records.append(run_case(case, args))
        rows.append(_row(records[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2, default=float))
    print(f"\nTissue PSNR (dB); CS lambda chosen on the held-out split / on the ground truth (oracle); "
          f"{len(cases)} cases in {time.perf_counter() - start:.0f} s\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    print("\n".join(rows))
    print("\n".join(summary(records, args.threads)))


if __name__ == "__main__":
    main()
