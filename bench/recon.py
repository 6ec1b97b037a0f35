"""Benchmark of MRI reconstruction: INR against zero-filled and SigPy CS (L1-wavelet, TV) on the same masks.

One run, every method on the same simulated acquisitions: 256 x 256 brain slices from the sample scans, 1D
Cartesian random masks (4x with centre 0.08, 8x with centre 0.04), single coil and 8 coils with ESPIRiT maps
estimated from the calibration lines, complex noise at a fixed SNR. The CS lambda is the best of its sweep by
the ground truth (a hard baseline); the INR uses no ground truth (fixed steps). Prints a Markdown table.

    python bench/recon.py                                  # the full benchmark
    python bench/recon.py --slices coronal --accels 4 --coils 8 --methods zf,l1wavelet,inr   # a quick subset
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medinr.geometry import Geometry  # noqa: E402
from medinr.io import load_image, take_slice  # noqa: E402
from medinr.metrics import image_metrics, psnr, tissue_mask  # noqa: E402
from medinr.mri.baselines import DEFAULT_LAMBDAS, cs_sweep, zero_filled  # noqa: E402
from medinr.mri.inr_recon import InrReconConfig, inr_reconstruct, reconstructed_image  # noqa: E402
from medinr.mri.problem import problem_from_image  # noqa: E402

CENTER = {4: 0.08, 8: 0.04}


def load_slices(names: list[str], size: int) -> dict[str, tuple[np.ndarray, Geometry]]:
    """The benchmark slices, scaled to [0, 1] by their maximum and centre-padded/cropped to ``size``^2."""
    out = {}
    for name in names:
        if name == "coronal":
            image, geometry = load_image(ROOT / "sample_scans" / "t1_coronal_slice.nii.gz")
        elif name == "mni_axial":
            volume, vgeo = load_image(ROOT / "sample_scans" / "mni152_t1_1mm.nii.gz")
            image, geometry = take_slice(volume, vgeo, 90, axis=2)
        else:
            raise SystemExit(f"unknown slice '{name}' (coronal, mni_axial)")
        canvas = np.zeros((size, size), np.float32)
        src = [slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + min(n, size)) for n in image.shape]
        dst = [slice(max(0, (size - n) // 2), max(0, (size - n) // 2) + min(n, size)) for n in image.shape]
        canvas[tuple(dst)] = image[tuple(src)]
        out[name] = (canvas / canvas.max(), Geometry((size, size), np.diag([*geometry.spacing[:2], 1.0, 1.0])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", default="coronal,mni_axial", help="coronal, mni_axial")
    parser.add_argument("--accels", default="4,8", help="accelerations (4 uses centre 0.08, 8 uses 0.04)")
    parser.add_argument("--coils", default="1,8", help="coil counts (more than 1: ESPIRiT maps)")
    parser.add_argument("--snr", type=float, default=30.0, help="SNR of the complex noise in dB (default 30)")
    parser.add_argument("--methods", default="zf,l1wavelet,tv,inr")
    parser.add_argument("--size", type=int, default=256, help="slice size (default 256)")
    parser.add_argument("--steps", type=int, default=None, help="INR steps (default: the library default)")
    parser.add_argument("--inr", default="{}", help="JSON of InrReconConfig fields, e.g. '{\"tv_weight\": 0.01}'")
    parser.add_argument("--cs-iters", type=int, default=100, help="SigPy iterations per lambda (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    inr_config = InrReconConfig(**json.loads(args.inr))
    if args.steps is not None:
        inr_config.steps = args.steps

    rows, records = [], []
    slices = load_slices(args.slices.split(","), args.size)
    for name, (image, geometry) in slices.items():
        tissue = tissue_mask(image)
        for accel in [int(a) for a in args.accels.split(",")]:
            for coils in [int(c) for c in args.coils.split(",")]:
                problem = problem_from_image(
                    image,
                    geometry,
                    "random",
                    accel,
                    CENTER.get(accel, 0.08),
                    coils,
                    "espirit",
                    args.snr,
                    True,
                    args.seed,
                )
                results: dict[str, tuple[np.ndarray, float, float, str]] = {}
                for method in methods:
                    wall, cpu = time.perf_counter(), time.process_time()
                    note = ""
                    if method == "zf":
                        est = zero_filled(problem.kspace, problem.maps, problem.mask.mask)
                    elif method in ("l1wavelet", "tv"):
                        sweep = cs_sweep(
                            problem.kspace,
                            problem.maps,
                            problem.mask.mask,
                            method,
                            DEFAULT_LAMBDAS,
                            args.cs_iters,
                            score=lambda x, ref=image, t=tissue: -psnr(ref, np.abs(x), t),
                            criterion="ground truth",
                        )
                        est, note = sweep.image, f"lambda {sweep.lamda:g} (best of {len(DEFAULT_LAMBDAS)})"
                    elif method == "inr":
                        k, m, s = problem.tensors()
                        res = inr_reconstruct(k, m, s, geometry, inr_config, seed=args.seed, progress=False)
                        est = reconstructed_image(res, k, m, s, inr_config.data_consistency)
                        note = f"{inr_config.model}, {inr_config.steps} steps"
                    else:
                        raise SystemExit(f"unknown method '{method}'")
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if method in ("l1wavelet", "tv"):  # per-lambda cost, so that methods compare per solve
                        note += f"; sweep total {wall:.0f} s"
                        wall, cpu = wall / len(DEFAULT_LAMBDAS), cpu / len(DEFAULT_LAMBDAS)
                    results[method] = (np.abs(est), wall, cpu, note)
                for method, (est, wall, cpu, note) in results.items():
                    met = image_metrics(image, est, tissue)
                    rows.append(
                        f"| {name} | {accel}x | {coils} | {method} | {met['psnr_tissue']:.2f} "
                        f"| {met['ssim_tissue']:.3f} | {met['psnr']:.2f} | {met['ssim']:.3f} "
                        f"| {wall:.1f} | {cpu:.1f} | {note} |"
                    )
                    records.append(
                        {
                            "slice": name,
                            "accel": accel,
                            "coils": coils,
                            "method": method,
                            **met,
                            "wall_s": wall,
                            "cpu_s": cpu,
                            "note": note,
                            "accel_achieved": problem.mask.achieved_acceleration,
                        }
                    )
                print("\n".join(rows[-len(results) :]), file=sys.stderr, flush=True)
    print(
        f"\nSNR {args.snr} dB, {args.size}x{args.size}, 1D random masks, ESPIRiT maps, {args.threads} threads; "
        f"INR: {json.dumps(inr_config.to_dict())}\n"
    )
    print("| slice | R | coils | method | PSNR tissue | SSIM tissue | PSNR | SSIM | wall s | CPU s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    cases = {(r["slice"], r["accel"], r["coils"]) for r in records}
    if "inr" in methods and ({"l1wavelet", "tv"} & set(methods)):
        print("\n| slice | R | coils | INR - best CS (tissue PSNR, dB) |\n|---|---|---|---|")
        for case in sorted(cases):
            by = {r["method"]: r["psnr_tissue"] for r in records if (r["slice"], r["accel"], r["coils"]) == case}
            best = max(v for k, v in by.items() if k in ("l1wavelet", "tv"))
            print(f"| {case[0]} | {case[1]}x | {case[2]} | {by['inr'] - best:+.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
