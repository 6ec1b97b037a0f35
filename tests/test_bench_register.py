"""bench/register.py's same-subject panel: a known, invertible warp of a real brain, and honest summaries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from medinr.registration.field import jacobian_map_fd

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_register", ROOT / "bench" / "register.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_subject_case_is_the_brain_warped_by_a_known_invertible_field():
    bench = _bench()
    case = bench.same_subject_case("robex", 0, 3.0, 20.0)
    brain = case["moving_labels"] > 0
    length = np.linalg.norm(case["truth"], axis=-1)[brain]
    assert 0.8 * 3.0 <= length.mean() <= 1.2 * 3.0
    assert jacobian_map_fd(case["truth"], case["fixed_geometry"]).min() > 0.2  # no folded truth
    zero = bench.evaluate(case, np.zeros_like(case["truth"]))
    right = bench.evaluate(case, case["truth"])
    assert right["mean_mm"] == 0 and right["folded_voxels"] == 0
    assert abs(zero["mean_mm"] - length.mean()) < 0.1 * length.mean()  # over the brain of the fixed image
    assert right["dice_mean"] > zero["dice_mean"] + 0.1


def test_summaries_give_median_worst_and_the_per_case_ratio_to_demons():
    bench = _bench()
    ours = [{"mean_mm": 0.2, "dice_mean": 0.9, "cpu_seconds": 4.0}, {"mean_mm": 0.6, "dice_mean": 0.7,
                                                                     "cpu_seconds": 9.0}]
    demons = [{"cpu_seconds": 2.0}, {"cpu_seconds": 3.0}]
    assert bench._summary(ours, "mean_mm", "max", demons) == 0.6
    assert bench._summary(ours, "dice_mean", "min", demons) == 0.7
    assert bench._summary(ours, "cpu_seconds", "ratio", demons) == 2.5
    assert bench._summary(ours, "cpu_seconds", "ratio-max", demons) == 3.0
    rows = {"medinr-default": ours, "sitk-demons": demons + []}
    text = bench.table("samesubject", {"medinr-default": [{**r, "p95_mm": 1, "max_mm": 1, "folded_voxels": 0,
                                                           "det_min": 0.5, "seconds": 1} for r in ours],
                                       "sitk-demons": [{**d, "seconds": 1} for d in rows["sitk-demons"]]})
    assert "| medinr-default | 0.400 | 0.600 |" in text and "| 2.50 | 3.00 |" in text
