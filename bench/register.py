"""Registration benchmark: MNI brain volumes warped by random smooth deformations with a known ground truth.

For each seed, ``fixed(x) = T(x + u_true(x))`` and ``moving = T`` (both resampled from the 2 mm MNI152
template onto a common grid), so the right answer of a fixed->moving registration is exactly ``u_true``.
Every method returns a dense field on the fixed grid in RAS mm; we report the mean and 95th percentile of
|u - u_true| inside the brain, Dice of GM/WM labels warped with it, folded voxels and wall time.

    .venv/bin/python bench/register.py                  # full run (3 seeds, 64^3, all methods)
    .venv/bin/python bench/register.py --quick          # 1 seed, medinr-fast + demons only

ANTsPy SyN (CC) and elastix are optional extras, skipped when not installed; SyN takes ~5 CPU-minutes per
seed at 64^3, so leave it out with --methods for a quicker run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from medinr.io import array_to_sitk, load_image  # noqa: E402
from medinr.registration import register  # noqa: E402
from medinr.registration.evaluation import dice_per_label, displacement_error  # noqa: E402
from medinr.registration.field import dense_displacement, jacobian_map_fd, sitk_field_to_ras, warp_image  # noqa: E402
from medinr.registration.register import settings_from_preset  # noqa: E402

SCANS = ROOT / "sample_scans"


# ------------------------------------------------------------------------------------------------ data
def make_case(size: int, seed: int, max_mm: float, smooth_mm: float) -> dict:
    """One synthetic pair with its true field (RAS mm on the fixed grid) and labels."""
    t1, g2 = load_image(SCANS / "mni152_t1_2mm.nii.gz")
    labels, _ = load_image(SCANS / "mni152_labels_2mm.nii.gz")
    geom = g2.resized((size,) * 3)
    zero = np.zeros(geom.shape + (3,))
    rng = np.random.default_rng(seed)
    sigma_vox = smooth_mm / geom.spacing
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(geom.shape), sigma_vox) for _ in range(3)], -1)
    brain = warp_image(labels, g2, zero, geom, mode="nearest") > 0
    amp = rng.uniform(0.6, 1.0) * max_mm
    field *= amp / np.linalg.norm(field, axis=-1)[brain].max()
    return {
        "geometry": geom,
        "moving": warp_image(t1, g2, zero, geom),
        "moving_labels": warp_image(labels, g2, zero, geom, mode="nearest"),
        "fixed": warp_image(t1, g2, field, geom),
        "fixed_labels": warp_image(labels, g2, field, geom, mode="nearest"),
        "truth": field,
    }


# --------------------------------------------------------------------------------------------- methods
def run_medinr(case: dict, preset: str, seed: int, device: str) -> np.ndarray:
    g = case["geometry"]
    res = register(case["fixed"], g, case["moving"], g, settings_from_preset(preset), seed=seed, device=device)
    return dense_displacement(res, g)


def _sitk_pair(case: dict):
    import SimpleITK as sitk

    g = case["geometry"]
    f = sitk.Cast(array_to_sitk(case["fixed"], g), sitk.sitkFloat32)
    m = sitk.Cast(array_to_sitk(case["moving"], g), sitk.sitkFloat32)
    return f, m


def run_demons(case: dict, seed: int, device: str) -> np.ndarray:
    """SimpleITK fast symmetric-forces demons, two-level pyramid (half, then full resolution)."""
    import SimpleITK as sitk

    f, m = _sitk_pair(case)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetStandardDeviations(1.0)
    field = None
    for shrink, iters in ((2, 100), (1, 50)):
        fs = (
            sitk.Shrink(sitk.SmoothingRecursiveGaussian(f, 0.5 * shrink * f.GetSpacing()[0]), [shrink] * 3)
            if shrink > 1
            else f
        )
        ms = (
            sitk.Shrink(sitk.SmoothingRecursiveGaussian(m, 0.5 * shrink * m.GetSpacing()[0]), [shrink] * 3)
            if shrink > 1
            else m
        )
        demons.SetNumberOfIterations(iters)
        if field is None:
            field = demons.Execute(fs, ms)
        else:
            init = sitk.Resample(field, fs, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(fs, ms, init)
    return sitk_field_to_ras(field)[0]


def run_bspline(case: dict, seed: int, device: str) -> np.ndarray:
    """SimpleITK B-spline, correlation metric, L-BFGS-B, three-level pyramid."""
    import SimpleITK as sitk

    f, m = _sitk_pair(case)
    tx = sitk.BSplineTransformInitializer(f, [8, 8, 8])
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=30,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=60,
    )
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(tx, inPlace=True)
    out = reg.Execute(f, m)
    disp = sitk.TransformToDisplacementField(
        out, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(), f.GetSpacing(), f.GetDirection()
    )
    return sitk_field_to_ras(disp)[0]


def run_ants(case: dict, seed: int, device: str) -> np.ndarray:
    """ANTsPy SyN with CC (optional extra)."""
    import ants
    import SimpleITK as sitk

    f, m = _sitk_pair(case)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"medinr_bench_ants_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    sitk.WriteImage(f, str(tmp / "f.nii.gz"))
    sitk.WriteImage(m, str(tmp / "m.nii.gz"))
    out = ants.registration(
        ants.image_read(str(tmp / "f.nii.gz")),
        ants.image_read(str(tmp / "m.nii.gz")),
        type_of_transform="SyNOnly",
        syn_metric="CC",
        initial_transform="identity",
        random_seed=seed,
        outprefix=str(tmp / "r_"),
    )
    warp = [p for p in out["fwdtransforms"] if p.endswith("Warp.nii.gz")][0]
    return sitk_field_to_ras(sitk.ReadImage(warp, sitk.sitkVectorFloat64))[0]


def run_elastix(case: dict, seed: int, device: str) -> np.ndarray:
    """elastix B-spline (optional extra), via itk-elastix."""
    import itk

    g = case["geometry"]
    f, m = _sitk_pair(case)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"medinr_bench_elx_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    import SimpleITK as sitk

    sitk.WriteImage(f, str(tmp / "f.nii.gz"))
    sitk.WriteImage(m, str(tmp / "m.nii.gz"))
    fi = itk.imread(str(tmp / "f.nii.gz"), itk.F)
    mi = itk.imread(str(tmp / "m.nii.gz"), itk.F)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("bspline", 3))
    params.SetParameter("FinalGridSpacingInPhysicalUnits", "16")
    params.SetParameter("MaximumNumberOfIterations", "250")
    params.SetParameter("RandomSeed", str(seed + 1))
    _, tparams = itk.elastix_registration_method(fi, mi, parameter_object=params, log_to_console=False)
    cwd = os.getcwd()
    os.chdir(tmp)  # transformix writes deformationField.nii into the working folder
    try:
        disp = itk.transformix_deformation_field(mi, tparams)
    finally:
        os.chdir(cwd)
    arr = np.asarray(disp).astype(np.float64)  # (z, y, x, 3), vectors LPS
    arr = arr.transpose(2, 1, 0, 3).copy()
    arr[..., :2] *= -1
    assert arr.shape[:3] == g.shape
    return arr


METHODS = {
    "medinr-default": lambda c, s, d: run_medinr(c, "default", s, d),
    "medinr-fast": lambda c, s, d: run_medinr(c, "fast", s, d),
    "sitk-bspline": run_bspline,
    "sitk-demons": run_demons,
    "ants-syn": run_ants,
    "elastix-bspline": run_elastix,
}
OPTIONAL = {"ants-syn": "ants", "elastix-bspline": "itk"}


def available(name: str) -> bool:
    mod = OPTIONAL.get(name)
    if mod is None:
        return True
    try:
        module = __import__(mod)
        if mod == "itk":
            module.elastix_registration_method  # noqa: B018 (itk loads lazily; elastix is a separate wheel)
        return True
    except Exception:  # missing wheel or a missing dependency of it: an optional extra, skip it
        return False


def evaluate(case: dict, u: np.ndarray) -> dict:
    g = case["geometry"]
    brain = case["fixed_labels"] > 0
    err = displacement_error(u, case["truth"], brain)
    warped = warp_image(case["moving_labels"], g, u, g, mode="nearest")
    dice = dice_per_label(case["fixed_labels"], warped)
    det = jacobian_map_fd(u, g)
    return {
        **err,
        "dice_gm": dice.get("1", float("nan")),
        "dice_wm": dice.get("2", float("nan")),
        "folded_percent": float(100 * np.mean(det <= 0)),
        "det_min": float(det.min()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="number of random deformations (default 3)")
    p.add_argument("--size", type=int, default=64, help="grid size per axis (default 64)")
    p.add_argument("--max-mm", type=float, default=5.0, help="largest displacement in the brain, mm (default 5)")
    p.add_argument("--smooth-mm", type=float, default=20.0, help="smoothness (Gaussian sigma) of the warp, mm")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    p.add_argument("--quick", action="store_true", help="1 seed, medinr-fast and sitk-demons only")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every method (default 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the per-run results here")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.methods = 1, "medinr-fast,sitk-demons"
    torch.set_num_threads(a.threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m}")
    skipped = [m for m in methods if not available(m)]
    methods = [m for m in methods if m not in skipped]
    rows: dict[str, list[dict]] = {"identity": []}
    for seed in range(a.seeds):
        case = make_case(a.size, seed, a.max_mm, a.smooth_mm)
        rows["identity"].append({**evaluate(case, np.zeros_like(case["truth"])), "seconds": 0.0, "cpu_seconds": 0.0})
        for m in methods:
            t0, c0 = time.perf_counter(), time.process_time()
            u = METHODS[m](case, seed, a.device)
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            r = {**evaluate(case, u), "seconds": sec, "cpu_seconds": cpu}
            rows.setdefault(m, []).append(r)
            print(
                f"seed {seed} {m}: {r['mean_mm']:.3f} mm, p95 {r['p95_mm']:.3f}, {sec:.1f} s wall, {cpu:.1f} s CPU",
                file=sys.stderr,
            )
    print(
        f"\nRegistration benchmark: {a.size}^3 MNI152 T1, {a.seeds} random smooth warps (<= {a.max_mm} mm, "
        f"sigma {a.smooth_mm} mm), {a.threads} threads, device {a.device}. Mean over seeds.\n"
    )
    print(
        "| method | mean error (mm) | p95 error (mm) | Dice GM | Dice WM | folded % | min det J | wall (s) | CPU (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for m, rs in rows.items():
        mean = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        mn = float(np.min([r["det_min"] for r in rs]))
        print(
            f"| {m} | {mean['mean_mm']:.3f} | {mean['p95_mm']:.3f} | {mean['dice_gm']:.3f} | {mean['dice_wm']:.3f} "
            f"| {mean['folded_percent']:.3f} | {mn:.3f} | {mean['seconds']:.1f} | {mean['cpu_seconds']:.1f} |"
        )
    if skipped:
        print(f"\nSkipped (not installed): {', '.join(skipped)}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
