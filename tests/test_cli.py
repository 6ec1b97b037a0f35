"""The ``medinr`` console script: ``fit`` and ``info`` work end to end; bad input gives one line and writes nothing.

The hostile cases of issue 13 are in test_safety*.py and test_fuzz.py."""

import json

import nibabel as nib
import numpy as np
import pytest

from medinr.checkpoint import load_checkpoint
from medinr.geometry import Geometry
from medinr.io import save_image
from medinr.outputs import MANIFEST
from pipelines.cli import main


@pytest.fixture()
def small_image(tmp_path, coronal_64):
    path = tmp_path / "slice.nii.gz"
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-30.0, 20.0, 5.0]
    save_image(path, coronal_64 * 800.0, Geometry(coronal_64.shape, affine))  # scanner-like units
    return path


def single_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("medinr: error:")
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.slow
def test_fit_writes_checkpoint_image_metrics_and_png(tmp_path, small_image, capsys):
    out = tmp_path / "out"
    rc = main(["fit", str(small_image), "--steps", "200", "--out", str(out), "--quiet"])  # the default family
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST, "comparison.png", "fitted.nii.gz", "metrics.json", "model.inr"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["psnr"] > 30.0
    fitted = nib.load(out / "fitted.nii.gz")
    np.testing.assert_allclose(fitted.affine, nib.load(small_image).affine, atol=1e-5)
    # written back in the input's units, not normalised ones
    src = np.asarray(nib.load(small_image).dataobj)
    assert abs(float(np.asarray(fitted.dataobj).max()) - float(src.max())) < 0.2 * src.max()
    ckpt = load_checkpoint(out / "model.inr")
    assert ckpt.geometry.shape == (64, 64) and ckpt.kind == "intensity"
    assert (out / "comparison.png").stat().st_size > 10_000

    rc = main(["info", str(out / "model.inr")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mrgrid" in text and "shape (64, 64)" in text

    # a second run does not overwrite without --force
    rc = main(["fit", str(small_image), "--model", "siren", "--steps", "2", "--out", str(out), "--quiet"])
    assert rc == 2
    assert "--force" in single_error_line(capsys)


@pytest.mark.parametrize(
    "args,message",
    [
        (["fit", "{missing}", "--out", "{out}"], "not found"),
        (["fit", "{image}", "--model", "nonsense", "--out", "{out}"], "unknown model 'nonsense'"),
        (["fit", "{image}", "--model-options", "{{bad", "--out", "{out}"], "not valid JSON"),
        (["fit", "{image}", "--steps", "0", "--out", "{out}"], "argument --steps: 0 must be >= 1"),
        (["reconstruct", "{image}", "--coarse-start", "1", "--out", "{out}", "--quiet"],
         "argument --coarse-start: 1 must be < 1"),
        (["fit", "{nan}", "--out", "{out}"], "NaN"),
        (["info", "{nan}"], "NaN"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, small_image, capsys, args, message):
    nan = np.ones((8, 8), np.float32)
    nan[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    out = tmp_path / "out"
    fmt = {"missing": str(tmp_path / "none.nii.gz"), "out": str(out), "image": str(small_image),
           "nan": str(tmp_path / "nan.npy")}
    rc = main([a.format(**fmt) for a in args] + (["--quiet"] if args[0] == "fit" else []))
    assert rc == 2
    assert message in single_error_line(capsys)
    assert not out.exists()


def test_argument_errors_exit_non_zero_with_one_line(capsys):
    assert main(["fit"]) == 2  # main returns argparse's status instead of raising SystemExit
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("medinr ")


def test_force_replaces_a_whole_earlier_run(tmp_path, small_image, capsys):
    out = tmp_path / "out"
    args = ["fit", str(small_image), "--model", "siren", "--model-options", '{"hidden": 16, "layers": 1}',
            "--steps", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    first = (out / "model.inr").read_bytes()
    (out / "metrics.json").unlink()  # whatever an earlier run left, the new one is published as a set
    assert main(args + ["--force", "--seed", "1"]) == 0
    assert (out / "metrics.json").is_file() and (out / "model.inr").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "slice.nii.gz"]  # no staging left beside it


def test_memory_limit_applies_to_one_command(tmp_path, small_image, capsys, monkeypatch):
    from medinr.errors import MedinrError
    from medinr.resources import memory_budget, parse_memory_size

    monkeypatch.delenv("MEDINR_MEMORY_LIMIT", raising=False)
    args = ["fit", str(small_image), "--model", "siren", "--model-options", '{"hidden": 4000, "layers": 3}',
            "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args + ["--memory-limit", "64M"]) == 2
    err = capsys.readouterr().err
    assert "more than 16.0 MiB" in err and "--memory-limit" in err  # weights may take a quarter of the budget
    assert memory_budget() is None or memory_budget() > 64 << 20  # the default is back after the command
    assert parse_memory_size("1.5G") == 3 << 29 and parse_memory_size("512MiB") == 512 << 20
    assert parse_memory_size("none") is None
    with pytest.raises(MedinrError, match="not a size"):
        parse_memory_size("12 parsecs")


def test_console_script_keeps_exit_codes_and_output(tmp_path, small_image):
    """The installed ``medinr`` (``pipelines.cli:console``) exits with :func:`main`'s status and prints what it
    printed: 0 and the outputs of a fit, 2 and one line for a bad input, 0 for ``--version``."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["medinr"] == \
        "pipelines.cli:console"

    def console(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from pipelines.cli import console; console()", *args],
                              cwd=root, capture_output=True, text=True, timeout=300)

    out = tmp_path / "fit"
    done = console("fit", str(small_image), "--steps", "2", "--out", str(out))
    assert done.returncode == 0 and str(out) in done.stdout and (out / "metrics.json").is_file()
    bad = console("render", str(tmp_path / "missing.inr"), "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("medinr: error:") and not (tmp_path / "x.png").exists()
    assert console("--version").returncode == 0
