"""INR reconstruction and the ``medinr reconstruct`` command: quality against zero-filled, inputs, bad inputs."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from medinr.checkpoint import load_checkpoint
from medinr.geometry import Geometry
from medinr.io import load_image
from medinr.metrics import psnr, tissue_mask
from medinr.mri import SenseOp
from medinr.mri.baselines import zero_filled
from medinr.mri.config import preset_config
from medinr.mri.inr_recon import inr_reconstruct, reconstructed_image
from medinr.mri.problem import problem_from_image
from pipelines.cli import main

SLICE = "sample_scans/t1_coronal_slice.nii.gz"


@pytest.fixture(scope="module")
def small_image() -> np.ndarray:
    """The dipy coronal slice, downsampled to 64 x 64 (values 0..1)."""
    from skimage.transform import resize

    image, _ = load_image(SLICE)
    return resize(image, (64, 64), anti_aliasing=True).astype(np.float32)


@pytest.fixture()
def image_file(tmp_path, small_image):
    path = tmp_path / "slice.nii.gz"
    affine = np.diag([2.0, 3.0, 1.0, 1.0])
    affine[:3, 3] = [-10, 5, 7]
    nib.save(nib.Nifti1Image(small_image, affine), path)
    return path


@pytest.mark.slow
def test_inr_beats_zero_filled_and_is_data_consistent(small_image):
    problem = problem_from_image(
        small_image, Geometry(small_image.shape), "random", 4, 0.08, 8, "simulated", snr_db=35, seed=0
    )
    kspace, maps, mask = problem.tensors()
    tissue = tissue_mask(small_image)
    zf = psnr(small_image, np.abs(zero_filled(problem.kspace, problem.maps, problem.mask.mask)), tissue)
    config = preset_config("default", path={"steps": 100, "extend": 1.0})
    result = inr_reconstruct(problem, config, seed=0, progress=False)
    inr = psnr(small_image, np.abs(reconstructed_image(result, kspace, maps, mask, False)), tissue)
    assert inr > zf + 4.0, (inr, zf)  # measured: about +7 dB (zero-filled ~17 dB)
    assert result.kind == "complex" and result.extra["final"].startswith("refitted")
    # single coil: the data-consistent output reproduces the acquired samples exactly
    single = problem_from_image(small_image, Geometry(small_image.shape), "random", 4, 0.08, 1, "simulated", seed=0)
    k1, m1, mask1 = single.tensors()
    config = preset_config("default", path={"steps": 30}, data_consistency=True)
    dc = inr_reconstruct(single, config, progress=False)
    pred = SenseOp(m1, mask1)(torch.from_numpy(reconstructed_image(dc, k1, m1, mask1, True)))
    assert torch.allclose(pred, k1 * mask1, atol=1e-4 * float(k1.abs().max()))


def test_cli_image_input_writes_everything(tmp_path, image_file, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "reconstruct",
            str(image_file),
            "--out",
            str(out),
            "--steps",
            "20",
            "--snr",
            "30",
            "--quiet",
            "--baselines",
            "zf,l1wavelet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for name in [
        "recon.nii.gz",
        "zero_filled.nii.gz",
        "l1wavelet.nii.gz",
        "mask.nii.gz",
        "recon.inr",
        "metrics.json",
        "report.png",
    ]:
        assert (out / name).is_file(), name
    src = nib.load(image_file)
    rec = nib.load(out / "recon.nii.gz")
    assert rec.shape[:2] == src.shape[:2] and np.allclose(rec.affine, src.affine)
    # same intensity units as the input (values 0..1 here, not normalised to something else)
    assert 0.5 < np.percentile(rec.get_fdata(), 99.5) < 1.5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reference"] == "ground_truth" and metrics["settings"]["seed"] == 0
    assert set(metrics["methods"]) == {"inr", "zero_filled", "l1wavelet"}
    assert abs(metrics["acceleration_achieved"] - 4) < 0.2
    assert "psnr_tissue" in metrics["methods"]["inr"]
    # times apart from results: per method, the INR per stage
    timing = metrics["timing"]
    assert {"setup", "baselines", "inr", "evaluation", "writing", "total"} <= set(timing)
    assert set(timing["baselines"]) == {"zero_filled", "l1wavelet"}
    assert set(timing["inr"]["stages"]) == {"walk", "final"}
    assert timing["inr"]["stages"]["walk"]["steps"] > 0 and timing["inr"]["stages"]["walk"]["seconds_per_step"] > 0
    # every choice is recorded once: the request, the noise estimate, the split, the curve, the chosen point, lambdas
    details = metrics["method_details"]
    assert metrics["noise"]["sigma"] > 0 and details["inr"]["chosen"] in details["inr"]["validation_curve"]
    assert metrics["holdout_split"]["held_out_units"] >= 1 and "split" not in details["inr"]
    assert metrics["settings"]["inr"]["path"]["steps"] == 20 and metrics["settings"]["baselines"] == ["l1wavelet"]
    assert details["l1wavelet"]["lambda"] in details["l1wavelet"]["lambdas"] and not details["l1wavelet"]["at_boundary"]
    ckpt = load_checkpoint(out / "recon.inr")
    assert ckpt.kind == "complex" and ckpt.model.out_features == 2
    values = ckpt.to_output_units(ckpt.model.evaluate(ckpt.geometry.network_grid()))
    magnitude = torch.linalg.vector_norm(values, dim=-1).numpy()
    np.testing.assert_allclose(magnitude, rec.get_fdata().squeeze(), atol=1e-4)
    # a second run without --force refuses and keeps the files
    assert main(["reconstruct", str(image_file), "--out", str(out), "--steps", "2", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def _fully_sampled_kspace(image: np.ndarray, coils: int = 4) -> np.ndarray:
    problem = problem_from_image(image, Geometry(image.shape), "random", 1, 0.08, coils, "simulated", seed=1)
    return problem.kspace


def test_cli_measured_npy_and_h5(tmp_path, small_image, capsys):
    full = _fully_sampled_kspace(small_image)
    np.save(tmp_path / "full.npy", full)
    rc = main(
        [
            "reconstruct",
            str(tmp_path / "full.npy"),
            "--out",
            str(tmp_path / "a"),
            "--steps",
            "30",
            "--quiet",
            "--baselines",
            "zf",
            "--center-fraction",
            "0.25",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["reference"] == "fully_sampled_rss" and "inr" in metrics["methods"]

    # fastMRI layout: (slices, coils, ky, kx) and a 1D mask over the last axis
    lines = np.zeros(64, bool)
    lines[::2] = True
    lines[24:40] = True
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["kspace"] = np.stack([full * lines, full * lines])
        f["mask"] = lines
    rc = main(
        [
            "reconstruct",
            str(tmp_path / "scan.h5"),
            "--out",
            str(tmp_path / "b"),
            "--steps",
            "30",
            "--baselines",
            "zf",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "(the file's own sampling)" in out  # not --accel's default 4x, and the summary says so
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["reference"] == "none" and "methods" not in metrics
    assert abs(metrics["acceleration_achieved"] - 64 / lines.sum()) < 1e-6
    assert metrics["kspace_relative_error"]["inr"] < 0.5


def test_cli_measured_sample_scan(tmp_path, capsys):
    """The real 2-coil GRE from twixtools: fully sampled, undersampled here retrospectively."""
    rc = main(
        [
            "reconstruct",
            "sample_scans/gre_2coil_kspace.npy",
            "--out",
            str(tmp_path / "g"),
            "--steps",
            "20",
            "--quiet",
            "--baselines",
            "zf",
            "--accel",
            "2",
            "--center-fraction",
            "0.15",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    img = nib.load(tmp_path / "g" / "recon.nii.gz")
    assert img.shape[:2] == (160, 160) and np.allclose(img.header.get_zooms()[:2], 1.25)


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty_mask", "samples nothing"),
        ("mask_shape", "does not match"),
        ("nan_kspace", "NaN"),
        ("unknown_model", "unknown model"),
        ("real_kspace_h5", "real values"),
    ],
)
def test_cli_bad_inputs_fail_cleanly(tmp_path, image_file, small_image, capsys, case, message):
    out = tmp_path / "out"
    args = ["reconstruct", str(image_file), "--out", str(out), "--steps", "2", "--quiet", "--baselines", "zf"]
    if case == "empty_mask":
        np.save(tmp_path / "m.npy", np.zeros(64))
        args += ["--mask", str(tmp_path / "m.npy")]
    elif case == "mask_shape":
        np.save(tmp_path / "m.npy", np.ones((32, 32)))
        args += ["--mask", str(tmp_path / "m.npy")]
    elif case == "nan_kspace":
        k = _fully_sampled_kspace(small_image, 2)
        k[0, 3, 3] = np.nan
        np.save(tmp_path / "k.npy", k)
        args[1] = str(tmp_path / "k.npy")
    elif case == "unknown_model":
        args += ["--model", "nosuchnet"]
    elif case == "real_kspace_h5":
        with h5py.File(tmp_path / "k.h5", "w") as f:
            f["kspace"] = np.ones((2, 64, 64), np.float32)
        args[1] = str(tmp_path / "k.h5")
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def _recon_cli(tmp_path, image_file, name: str, *extra: str) -> tuple[dict, object]:
    out = tmp_path / name
    rc = main(["reconstruct", str(image_file), "--out", str(out), "--steps", "12", "--quiet", "--baselines", "zf",
               "--snr", "30", *extra])
    assert rc == 0
    return json.loads((out / "metrics.json").read_text()), load_checkpoint(out / "recon.inr")


@pytest.mark.slow
def test_cli_final_prior_and_no_whiten_flags_reach_the_fit(tmp_path, image_file, small_image):
    """Each flag changes what the fit did (a test that fails if the flag were ignored)."""
    base, base_ckpt = _recon_cli(tmp_path, image_file, "base")
    details = base["method_details"]["inr"]
    quiet = details["held_out_rule"]["quiet"]  # then the default keeps the split's model, walked 2x slower
    assert details["final"].startswith("the split's model" if quiet else "refitted")
    assert details["held_out_rule"]["walk_pace"] == (2.0 if quiet else 1.0)
    refit, _ = _recon_cli(tmp_path, image_file, "refit", "--final", "refit")  # named: runs whatever the samples
    assert refit["method_details"]["inr"]["final"].startswith("refitted") and "final" in refit["timing"]["inr"][
        "stages"]
    assert base_ckpt.extra["noise"]["whitened"] is True and "prior" not in base["timing"]["inr"]["stages"]
    split, _ = _recon_cli(tmp_path, image_file, "split", "--final", "split")
    assert split["method_details"]["inr"]["final"] == ("the split's model at the chosen step; the walk went 2x "
                                                        "slower along the path")
    assert "final" not in split["timing"]["inr"]["stages"]
    assert details["coarse_start"] is None  # off by default
    coarse = _recon_cli(tmp_path, image_file, "coarse", "--coarse-start", "0.25")[0]["method_details"]["inr"]
    pace = coarse["held_out_rule"]["walk_pace"]  # the coarse start is a fraction of the path the walk took
    assert coarse["coarse_start"]["steps"] == pytest.approx(0.25 * 12 * pace) and coarse["coarse_start"]["levels"] >= 1
    tuned, _ = _recon_cli(tmp_path, image_file, "tuned", "--final", "finetune")
    assert "continued on every sample" in tuned["method_details"]["inr"]["final"]
    _, plain = _recon_cli(tmp_path, image_file, "plain", "--no-whiten")
    assert plain.extra["noise"]["whitened"] is False
    prior_path = tmp_path / "prior.nii.gz"
    nib.save(nib.Nifti1Image(small_image, np.diag([2.0, 3.0, 1.0, 1.0])), prior_path)
    prior, prior_ckpt = _recon_cli(tmp_path, image_file, "prior", "--prior", str(prior_path), "--prior-steps", "15")
    assert prior["timing"]["inr"]["stages"]["prior"]["steps"] == 15
    assert prior["methods"]["inr"]["psnr"] != base["methods"]["inr"]["psnr"]  # the prior fit moved the start


def test_seeded_runs_compare_equal_on_everything_but_timing(tmp_path, image_file, fixed_threads):
    first, _ = _recon_cli(tmp_path, image_file, "one")
    second, _ = _recon_cli(tmp_path, image_file, "two")
    assert set(first.pop("timing")) == set(second.pop("timing"))  # times differ from run to run; results must not
    assert first == second
