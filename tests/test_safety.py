"""Issue 13, case by case: every hostile input of the audit gives exit 2 and one clear ``medinr: error:`` line,
no traceback, writes nothing, and fails within 10 s (most before any work starts)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_files import (
    assert_refused,
    entries,
    nifti_claiming,
    nifti_with_pixdim,
    rewrite_metadata,
    run_cli,
    write_checkpoint,
    write_image,
)

from medinr.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.geometry import Geometry
from medinr.io import save_image
from medinr.models import build_model
from pipelines import cli
from pipelines.common import write_json


def _meta(change):
    """A checkpoint-header case: rewrite a good 3D checkpoint's metadata with ``change``."""
    def make(tmp: Path) -> Path:
        return rewrite_metadata(write_checkpoint(tmp / "good.inr"), tmp / "bad.inr", change)
    return make


def _set(path: str, value):
    keys = path.split(".")

    def change(meta: dict) -> None:
        node = meta
        for k in keys[:-1]:
            node = node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return change


def _nan_json(tmp: Path) -> Path:
    good = write_checkpoint(tmp / "good.inr")
    text = json.dumps(read_metadata(good)).replace('"scale": 3.0', '"scale": NaN')
    assert "NaN" in text
    return rewrite_metadata(good, tmp / "bad.inr", text)


def _nan_weights(tmp: Path) -> Path:
    ck = load_checkpoint(write_checkpoint(tmp / "good.inr"))
    with __import__("torch").no_grad():
        next(ck.model.parameters())[0, 0] = float("nan")
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in ck.model.state_dict().items()}
    header = json.dumps(read_metadata(tmp / "good.inr"))
    save_file(tensors, str(tmp / "bad.inr"), metadata={"medinr": header})
    return tmp / "bad.inr"


def _conv_lattice(tmp: Path) -> Path:
    good = write_checkpoint(tmp / "conv.inr", family="conv_inr", lattice=[12, 12, 12], channels=4, layers=1)
    return rewrite_metadata(good, tmp / "bad.inr", _set("model.config.lattice", [2000, 2000, 2000]))


CHECKPOINTS = {
    "2d_geometry_3d_model": (_meta(lambda m: m["geometry"].update(
        shape=[12, 12], spacing_mm=[2.0, 2.0])), "model takes 3D coordinates but the geometry is 2D"),
    "hidden_minus_5": (_meta(_set("model.config.hidden", -5)), "model option 'hidden' must be in [1, 65536]"),
    "string_scale": (_meta(_set("output.scale", "2.5")), "output.scale must be a number"),
    "string_format_version": (_meta(_set("format_version", "1")), "format_version must be an integer"),
    "string_spacing": (_meta(_set("geometry.spacing_mm", "2,2,2")), "geometry.spacing_mm must be a list"),
    "no_affine": (_meta(_set("geometry.affine", KeyError)), "geometry has no affine"),
    "nan_affine": (_meta(lambda m: m["geometry"]["affine"][0].__setitem__(0, None)), "must be a number"),
    "coords_nonsense": (_meta(_set("coords", "nonsense")), "coords must be one of network, world_box, identity"),
    "hidden_1e9": (_meta(_set("model.config.hidden", 10**9)), "model option 'hidden' must be in"),
    "layers_1e7": (_meta(_set("model.config.layers", 10**7)), "model option 'layers' must be in [0, 256]"),
    "unknown_family": (_meta(_set("model.family", "\x1b[2Jevil")), "unknown model family"),
    "newer_format": (_meta(_set("format_version", 99)), "written by a newer medinr (format 99)"),
    "bare_nan_in_json": (lambda tmp: _nan_json(tmp), "is not valid JSON (NaN is not JSON"),
}
RENDER_ONLY = {
    "nan_weights": (_nan_weights, "holds NaN or infinite values"),
    "conv_inr_lattice_2000_cubed": (_conv_lattice, "on its [2000, 2000, 2000] lattice would need about"),
}


@pytest.mark.parametrize("command", ["info", "render"])
@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_damaged_checkpoint_headers(tmp_path, capsys, command, case):
    make, message = CHECKPOINTS[case]
    bad = make(tmp_path)
    before = entries(tmp_path)
    args = [command, bad] + (["--out", tmp_path / "slice.png"] if command == "render" else [])
    rc, err, seconds = run_cli(args, capsys)
    line = assert_refused(rc, err, message)
    assert "\x1b" not in line  # a header string never reaches the terminal raw
    assert entries(tmp_path) == before and seconds < 10


@pytest.mark.parametrize("case", sorted(RENDER_ONLY))
def test_checkpoints_whose_weights_or_size_are_refused_at_load(tmp_path, capsys, case):
    make, message = RENDER_ONLY[case]
    bad = make(tmp_path)
    before = entries(tmp_path)
    rc, err, seconds = run_cli(["render", bad, "--out", tmp_path / "slice.png"], capsys)
    assert_refused(rc, err, message)
    assert entries(tmp_path) == before and seconds < 10


def _files(tmp: Path) -> dict[str, Path]:
    """The inputs the CLI cases refer to as {name}."""
    f = {"img": write_image(tmp / "img.nii.gz", (24, 24)), "mov": write_image(tmp / "mov.nii.gz", (24, 24), seed=1)}
    for name, shape in {"one_voxel": (1, 1), "five_by_one": (5, 1), "one_by_32": (1, 32)}.items():
        f[name] = write_image(tmp / f"{name}.nii.gz", shape)
    np.save(tmp / "real3d.npy", np.random.default_rng(0).random((2, 24, 24)).astype(np.float32))
    f["real3d"] = tmp / "real3d.npy"
    f["bomb_gz"] = nifti_claiming(tmp / "bomb.nii.gz", (1000, 1000, 1000))
    f["bomb_nii"] = nifti_claiming(tmp / "bomb.nii", (1000, 1000, 1000))
    (tmp / "fp.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp / "nan.csv").write_text("x,y\nnan,2\n3,4\n")
    f["fp"], f["nan_lm"] = tmp / "fp.csv", tmp / "nan.csv"
    np.save(tmp / "mask255.npy", (np.arange(24) % 2 * 255).astype(np.uint8))
    f["mask255"] = tmp / "mask255.npy"
    (tmp / "a_file").write_text("not a folder")
    f["file_out"] = tmp / "a_file" / "out"
    f["ck"] = write_checkpoint(tmp / "ck.inr", ndim=2)
    f["nan_affine"] = nifti_with_pixdim(tmp / "nan_affine.nii", np.ones((8, 8)), 1, float("nan"))
    (tmp / "broken.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 10 10\nElementDataFile = LOCAL\n")
    f["broken_mha"] = tmp / "broken.mha"
    return f


OUT = "{out}"
CLI_CASES = {
    # bad input once reported as an internal error
    "fit_one_voxel": (["fit", "{one_voxel}", "--out", OUT], "every axis needs at least 3 voxels"),
    "fit_5x1": (["fit", "{five_by_one}", "--out", OUT], "every axis needs at least 3 voxels"),
    "fit_1x32": (["fit", "{one_by_32}", "--out", OUT], "every axis needs at least 3 voxels"),
    "reconstruct_real_3d_npy": (["reconstruct", "{real3d}", "--out", OUT], "k-space array must be complex"),
    "fit_lr_minus_1": (["fit", "{img}", "--lr", "-1", "--out", OUT], "argument --lr: -1 must be > 0"),
    "fit_lr_nan": (["fit", "{img}", "--lr", "nan", "--out", OUT], "argument --lr: 'nan' is not a finite number"),
    "register_lr_minus_1": (["register", "{img}", "{mov}", "--lr", "-1", "--out", OUT], "argument --lr"),
    "register_lr_nan": (["register", "{img}", "{mov}", "--lr", "nan", "--out", OUT], "argument --lr"),
    "reconstruct_lr_minus_1": (["reconstruct", "{img}", "--lr", "-1", "--out", OUT], "argument --lr"),
    "reconstruct_lr_nan": (["reconstruct", "{img}", "--lr", "nan", "--out", OUT], "argument --lr"),
    "fit_hidden_minus_1": (["fit", "{img}", "--model", "siren", "--model-options", '{"hidden": -1}', "--out", OUT],
                           "model option 'hidden' must be in [1, 65536], got -1"),
    "reconstruct_tv_nan": (["reconstruct", "{img}", "--tv", "nan", "--out", OUT], "argument --tv"),
    "reconstruct_unknown_baseline": (["reconstruct", "{img}", "--baselines", "zf,bogus", "--out", OUT],
                                     "unknown baseline 'bogus' (zf, cs, l1wavelet, tv)"),
    "register_jacobian_nan": (["register", "{img}", "{mov}", "--jacobian", "nan", "--out", OUT], "argument --jacobian"),
    "out_under_a_file": (["fit", "{img}", "--out", "{file_out}"], "is a file, not a folder"),
    # allocations sized by the input
    "nifti_gz_declaring_1000_cubed": (["fit", "{bomb_gz}", "--out", OUT], "it is truncated or damaged"),
    "nifti_declaring_1000_cubed": (["fit", "{bomb_nii}", "--out", OUT], "it is truncated or damaged"),
    "render_16384_squared": (["render", "{ck}", "--size", "16384x16384", "--memory-limit", "1G", "--out",
                              "{out}.png"], "a 16384x16384 render would need about 6.0 GiB"),
    "reconstruct_coils_100000": (["reconstruct", "{img}", "--coils", "100000", "--out", OUT], "argument --coils"),
    "reconstruct_coils_over_budget": (["reconstruct", "{img}", "--coils", "256", "--memory-limit", "4M",
                                       "--out", OUT], "simulating 256 coils"),
    "fit_weights_over_budget": (["fit", "{img}", "--model", "siren", "--model-options", '{"hidden": 30000}',
                                 "--memory-limit", "256M", "--out", OUT], "the weights of model 'siren' would need"),
    # exit 0 on bad input
    "holdout_1_5": (["reconstruct", "{img}", "--holdout", "1.5", "--out", OUT], "argument --holdout: 1.5 must be < 1"),
    "holdout_minus_0_5": (["reconstruct", "{img}", "--holdout", "-0.5", "--out", OUT], "argument --holdout"),
    "nan_landmark": (["register", "{img}", "{mov}", "--fixed-landmarks", "{nan_lm}", "--moving-landmarks", "{fp}",
                      "--out", OUT], "landmark coordinates must be finite"),
    "out_empty": (["fit", "{img}", "--out", ""], "--out is empty"),
    "mask_0_to_255": (["reconstruct", "{img}", "--mask", "{mask255}", "--baselines", "zf", "--out", OUT],
                      "must hold only 0 (not acquired) and 1 (acquired)"),
    # vague messages
    "nan_affine": (["fit", "{nan_affine}", "--out", OUT], "affine) holds NaN or infinite values"),
    "broken_mha_header": (["fit", "{broken_mha}", "--out", OUT], "cannot read image"),
    "bad_memory_limit": (["fit", "{img}", "--memory-limit", "lots", "--out", OUT], "is not a size like 512M"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_hostile_command_lines(tmp_path, capsys, case):
    files = _files(tmp_path)
    args, message = CLI_CASES[case]
    names = {"out": tmp_path / "out", **files}
    args = [re.sub(r"\{(\w+)\}", lambda m: str(names[m.group(1)]), a) for a in args]
    before = entries(tmp_path)
    rc, err, seconds = run_cli(args + (["--quiet"] if args[0] != "render" else []), capsys)
    line = assert_refused(rc, err, message)
    assert ".cxx" not in line and not re.search(r"0x[0-9a-f]{6}", line)  # no ITK source paths or object addresses
    assert entries(tmp_path) == before, entries(tmp_path) ^ before  # nothing written, no staging left behind
    assert seconds < 10


def test_native_reader_output_and_warnings_never_precede_the_error_line(tmp_path, capfd):
    """ITK's MetaIO prints straight to the process's stderr, nibabel warns: neither reaches the user."""
    files = _files(tmp_path)
    capfd.readouterr()
    # nibabel logs "pixdim[1,2,3] should be non-zero" to stderr while reading this one; its data are NaN
    warns = nifti_with_pixdim(tmp_path / "warns.nii", np.full((8, 8), np.nan), 1, 0.0)
    for image in (files["broken_mha"], warns):
        rc = cli.main(["fit", str(image), "--out", str(tmp_path / "o"), "--quiet"])
        err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(err) == 1 and err[0].startswith("medinr: error:"), err


def test_info_prints_header_strings_terminal_safe(tmp_path, capsys):
    evil = "\x1b]0;owned\x07\x1b[31mred\u202e"
    ck = rewrite_metadata(write_checkpoint(tmp_path / "good.inr"), tmp_path / "evil.inr",
                          lambda m: (m.update(medinr_version=evil), m["extra"].update(note=evil),
                                     m["output"].update(units=evil[:20])))
    for args, escaped in ((["info", str(ck)], "\\u001b]0;owned"), (["info", "--json", str(ck)], "\\u001b]0;owned")):
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert not any(c in out for c in "\x1b\x07\u202e"), out
        assert escaped in out  # shown, escaped


def test_info_into_a_closed_pipe_ends_quietly(tmp_path, capsys, monkeypatch):
    """``medinr info --json FILE | true``: the reader is gone; exit 141 (as a SIGPIPE'd tool), nothing on stderr."""
    ck = write_checkpoint(tmp_path / "ck.inr")
    read, write = os.pipe()
    os.close(read)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(os.fdopen(write, "wb"), write_through=False))
    rc = cli.main(["info", "--json", str(ck)])
    assert rc == 141
    assert capsys.readouterr().err == ""


def test_metrics_files_are_strict_json(tmp_path):
    data = {"psnr": float("inf"), "nmse": float("nan"), "low": -math.inf, "n": np.int64(3), "x": np.float32(0.5),
            "arr": np.arange(2), "nested": [{"v": np.nan}]}
    write_json(tmp_path / "m.json", data)
    text = (tmp_path / "m.json").read_text()

    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")

    back = json.loads(text, parse_constant=refuse)
    assert back == {"psnr": "inf", "nmse": "nan", "low": "-inf", "n": 3, "x": 0.5, "arr": [0, 1],
                    "nested": [{"v": "nan"}]}
    assert float(back["psnr"]) == math.inf  # the documented spelling reads back with float()
    # a checkpoint whose metadata holds an infinite PSNR is still written (and read) as strict JSON
    image = ContinuousImage(build_model("siren", 2, 1, hidden=8, layers=1), Geometry((8, 8)),
                            extra={"metrics": {"psnr": float("inf")}})
    assert load_checkpoint(save_checkpoint(tmp_path / "m.inr", image)).extra["metrics"]["psnr"] == "inf"


@pytest.mark.parametrize("shape", [(3, 13), (16, 16, 3)])
def test_the_smallest_accepted_image_fits(tmp_path, capsys, shape):
    """The documented minimum (3 voxels per axis) is a working input, not only a refusal threshold: a small
    2D image and a thin multi-slice stack are fitted and scored (SSIM defined)."""
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    save_image(tmp_path / "small.nii.gz", image, Geometry(shape))
    rc, err, _ = run_cli(["fit", tmp_path / "small.nii.gz", "--model", "siren", "--steps", "3", "--out",
                          tmp_path / "out", "--quiet"], capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["settings"]["steps"] == 3
    assert isinstance(record["metrics"].get("ssim"), float), record["metrics"]
    # and registers (local NCC boxes narrow on a thin axis instead of failing inside torch)
    rc, err, _ = run_cli(["register", tmp_path / "small.nii.gz", tmp_path / "small.nii.gz", "--preset", "fast",
                          "--out", tmp_path / "reg", "--quiet"], capsys)
    assert rc == 0, err
    assert (tmp_path / "reg" / "displacement.nii.gz").is_file()
