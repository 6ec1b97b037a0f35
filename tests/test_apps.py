"""Every command is ``run(request) -> AppResult`` plus one ``publish``: requests from a command line, torch-free
argument parsing, picklable requests, metrics.json with its times apart, and the fit's flags reaching the fit."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medinr.apps.requests import FitRequest, ReconstructRequest, RegisterRequest
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import save_image
from pipelines import cli
from pipelines import fit_image as fit_pipeline
from pipelines import reconstruct as recon_pipeline
from pipelines import register as register_pipeline

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from pipelines import cli
code = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "scipy", "SimpleITK", "nibabel", "matplotlib", "sigpy") if m in sys.modules)
print("PROBE", json.dumps({"heavy": heavy, "code": code}))
"""


@pytest.mark.parametrize("argv", [
    ["fit", "--help"], ["reconstruct", "--help"], ["register", "--help"], ["render", "--help"], ["info", "--help"],
    ["--help"], ["fit", "x.nii.gz", "--steps", "0", "--out", "o"], ["register", "a", "b", "--loss", "nope"],
    ["reconstruct", "x", "--holdout", "1.5", "--out", "o"],
])
def test_parsing_arguments_imports_no_torch(argv):
    """``--help`` and an argument error answer without importing torch (or the other heavy libraries)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = [s for s in proc.stdout.splitlines() if s.startswith("PROBE ")][-1]
    probe = json.loads(line[len("PROBE "):])
    assert probe["heavy"] == [], probe
    assert probe["code"] == (0 if "--help" in argv else 2), (probe, proc.stderr)


def _args(argv: list[str]):
    return cli.build_parser().parse_args(argv)


def test_requests_come_from_one_command_line_are_checked_and_pickle():
    fit = fit_pipeline.request(_args(["fit", "img.nii.gz", "--out", "o", "--steps", "7", "--footprint", "1",
                                      "--model-options", '{"hidden": 16}']))
    assert isinstance(fit, FitRequest) and (fit.steps, fit.footprint, fit.model_options) == (7, 1, {"hidden": 16})
    recon = recon_pipeline.request(_args(["reconstruct", "k.npy", "--out", "o", "--preset", "fast", "--final",
                                          "split", "--tv", "2", "--baselines", "zf,tv", "--no-whiten"]))
    assert isinstance(recon, ReconstructRequest) and recon.inr.final.kind == "split" and recon.baselines == ("tv",)
    assert recon.inr.patience == 5 and recon.inr.path.tv_start == recon.inr.path.tv_end == 2.0
    assert recon.inr.whiten is False and recon.outputs()[-1] == "tv.nii.gz"
    reg = register_pipeline.request(_args(["register", "f", "m", "--out", "o", "--transform", "inr", "--symmetric",
                                           "--fixed-labels", "fl", "--moving-labels", "ml", "--label-weight", "1"]))
    assert isinstance(reg, RegisterRequest) and reg.settings.transform == "inr" and reg.settings.labels.weight == 1
    assert "inverse_transform.inr" in reg.outputs() and "warped_labels.nii.gz" in reg.outputs()
    for request in (fit, recon, reg):
        assert pickle.loads(pickle.dumps(request)) == request  # a batch sends them to its workers
        json.dumps(request.to_dict())  # and records every choice
    with pytest.raises(MedinrError, match="held-out fraction"):
        FitRequest(image="x", holdout=1.0)
    with pytest.raises(MedinrError, match="given together"):
        RegisterRequest(fixed="f", moving="m", fixed_labels="fl")


def test_footprint_flag_reaches_the_fit(tmp_path, coronal_64, capsys):
    path = tmp_path / "img.nii.gz"
    save_image(path, coronal_64, Geometry(coronal_64.shape))
    records = {}
    for points in ("1", "2"):
        out = tmp_path / points
        assert cli.main(["fit", str(path), "--model", "mrgrid", "--steps", "12", "--footprint", points, "--out",
                         str(out), "--quiet", "--model-options", '{"levels": 2, "hidden": 8}']) == 0
        records[points] = json.loads((out / "metrics.json").read_text())
    assert records["1"]["fit"]["footprint"] == 1 and records["2"]["fit"]["footprint"] == 2
    assert records["1"]["final_loss"] != records["2"]["final_loss"]  # a different model of each voxel was fitted
    assert records["1"]["settings"]["footprint"] == 1
    timing = records["1"]["timing"]
    assert {"setup", "fit main", "fit final", "evaluation", "writing", "total"} <= set(timing)
    assert timing["fit main"]["steps"] == 12 and timing["fit final"]["steps"] == records["1"]["fit"]["refine_steps"]
    assert "wall_time_s" not in records["1"]  # no time among the results


def test_seeded_fits_compare_equal_on_everything_but_timing(tmp_path, coronal_64, fixed_threads):
    path = tmp_path / "img.nii.gz"
    save_image(path, coronal_64, Geometry(coronal_64.shape))
    runs = []
    for name in ("a", "b"):
        assert cli.main(["fit", str(path), "--model", "siren", "--steps", "15", "--out", str(tmp_path / name),
                         "--quiet", "--model-options", '{"hidden": 16, "layers": 1}', "--seed", "3"]) == 0
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        record.pop("timing")
        runs.append(record)
    assert runs[0] == runs[1]
    assert np.isfinite(runs[0]["metrics"]["psnr"])
