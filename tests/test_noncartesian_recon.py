"""The INR on non-Cartesian k-space and ``medinr reconstruct`` on radial / spiral data: simulated from an image,
resampled from fully sampled Cartesian k-space, and read from ISMRMRD files written by the ``ismrmrd`` package
and from ``.npz``; every bad combination of flags is one line and exit 2."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from mrd_files import write_mrd

from medinr.apps.requests import Acquisition, ReconstructRequest
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import load_image
from medinr.metrics import psnr, tissue_mask
from medinr.mri.coils import birdcage_maps
from medinr.mri.config import preset_config
from medinr.mri.noncart_inr import noncart_image, noncart_inr_reconstruct, whiten_samples
from medinr.mri.noncart_problem import noncart_problem_from_image
from medinr.mri.nufft import NufftSenseOp
from medinr.mri.trajectories import golden_angle_radial
from pipelines.cli import main

SLICE = "sample_scans/t1_coronal_slice.nii.gz"
MATRIX, FOV, COILS = (64, 64, 1), (220.0, 200.0, 5.0), 4


@pytest.fixture(scope="module")
def small_image() -> np.ndarray:
    """The dipy coronal slice, downsampled to 64 x 64 (values 0..1)."""
    from skimage.transform import resize

    image, _ = load_image(SLICE)
    return resize(image, (64, 64), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="module")
def radial_problem(small_image):
    problem = noncart_problem_from_image(small_image, Geometry((64, 64)), "radial", 32, COILS, "simulated", 30.0)
    return problem.prepared(0.1, 0)


def _config(**overrides):
    return preset_config("default", path={"steps": 60, "extend": 1.5}, eval_every=5, **overrides)


def test_inr_on_spokes_beats_gridding_and_chooses_on_held_out_spokes(radial_problem, small_image):
    """The split's model (never fitted to the held-out spokes) scores on them what THE non-Cartesian held-out error
    (the one CS's lambda is chosen by) gives for its image: the validator reads the loss step's own residual."""
    p = radial_problem
    assert p.split.describe()["unit"].startswith("readout") and p.split.held.sum() == 3
    recon = noncart_inr_reconstruct(p, _config(final="split"), seed=0, progress=False)
    image = noncart_image(recon, p.maps)
    chosen = recon.extra["chosen"]
    assert chosen in recon.extra["validation_curve"] and chosen["step"] > 0
    independent = p.validation()(image)
    assert abs(independent - chosen["validation_error"]) < 1e-3 * chosen["validation_error"], (independent, chosen)
    tissue = tissue_mask(small_image)
    inr, grid = psnr(small_image, np.abs(image), tissue), psnr(small_image, np.abs(p.gridding()), tissue)
    assert inr > grid + 3.0, (inr, grid)


def test_refit_on_every_spoke_and_density_weighted_data_term(radial_problem, small_image):
    p = radial_problem
    data = whiten_samples(p, True, torch.device("cpu"))
    dcf = p.dcf / p.dcf.mean()
    np.testing.assert_allclose(data.weights.numpy(), dcf, rtol=1e-5)  # outer samples weigh more: a preconditioner
    assert float(data.weights[:, -1].mean()) > 5 * float(data.weights[:, p.traj.shape[1] // 2].mean())
    assert data.coarse(torch.ones(data.grid, dtype=torch.bool), 0.5) is None  # no k-space centre to crop
    recon = noncart_inr_reconstruct(p, _config(), seed=0, progress=False)
    assert recon.extra["final"].startswith("refitted") and set(recon.history.stages) == {"walk", "final"}
    image = noncart_image(recon, p.maps)
    tissue = tissue_mask(small_image)
    assert psnr(small_image, np.abs(image), tissue) > psnr(small_image, np.abs(p.gridding()), tissue) + 3.0
    with pytest.raises(MedinrError, match="--data-consistency needs Cartesian"):
        noncart_inr_reconstruct(p, _config(data_consistency=True), progress=False)


def _run(args, capsys) -> tuple[int, str]:
    rc = main(["reconstruct", *map(str, args), "--quiet"])
    return rc, capsys.readouterr().err


@pytest.fixture()
def image_file(tmp_path, small_image):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(small_image, np.diag([2.0, 3.0, 1.0, 1.0])), path)
    return path


@pytest.mark.parametrize("trajectory, flag", [("radial", "--spokes"), ("spiral", "--interleaves")])
def test_cli_simulates_a_trajectory_from_an_image(tmp_path, image_file, capsys, trajectory, flag):
    out = tmp_path / "out"
    rc, err = _run([image_file, "--out", out, "--trajectory", trajectory, flag, 24 if trajectory == "radial" else 8,
                    "--snr", 30, "--steps", 30, "--baselines", "zf,l1wavelet", "--density", "pipe"], capsys)
    assert rc == 0, err
    files = {p.name for p in out.iterdir()}
    assert {"recon.nii.gz", "gridding.nii.gz", "l1wavelet.nii.gz", "recon.inr", "metrics.json", "report.png"} <= files
    assert "mask.nii.gz" not in files and "zero_filled.nii.gz" not in files
    assert np.allclose(nib.load(out / "recon.nii.gz").affine, nib.load(image_file).affine)
    m = json.loads((out / "metrics.json").read_text())
    assert m["sampling"]["density_compensation"] == "pipe" and m["sampling"]["units"].startswith("1/FOV")
    assert m["sampling"]["readouts"] == (24 if trajectory == "radial" else 8)
    assert m["holdout_split"]["unit"].startswith("readout") and m["noise"]["method"]
    assert set(m["methods"]) == {"gridding", "l1wavelet", "inr"}
    assert m["methods"]["inr"]["psnr_tissue"] > m["methods"]["gridding"]["psnr_tissue"]
    assert {"gridding", "l1wavelet"} == set(m["timing"]["baselines"]) and m["timing"]["inr"]["stages"]["walk"]["steps"]
    assert m["problem"]["trajectory"] == trajectory


def _radial_mrd(tmp_path, phantom: np.ndarray, units: str = "fov", noise: bool = True):
    traj = golden_angle_radial(32, MATRIX[:2])
    maps = torch.from_numpy(birdcage_maps(MATRIX[:2], COILS))
    samples = NufftSenseOp(maps, traj)(torch.from_numpy(phantom.astype(np.complex64))).numpy()
    rng = np.random.default_rng(0)
    sigma = 0.002 * float(np.abs(samples).max())

    def white(*shape):
        noise = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return (sigma * noise / np.sqrt(2)).astype(np.complex64)

    stored = traj / np.array(MATRIX[:2]) if units == "normalised" else traj
    path = write_mrd(tmp_path / f"radial_{units}.h5", samples + white(*samples.shape), MATRIX, FOV, traj=stored,
                     noise=white(COILS, 2048) if noise else None)
    return path, samples


@pytest.mark.parametrize("units", ["fov", "normalised"])
def test_cli_reconstructs_a_radial_mrd_file_written_by_ismrmrd(tmp_path, small_image, capsys, units):
    """ISMRMRD radial data round-trip through `medinr reconstruct`: encoded matrix and FOV in the affine, the units
    detected, the noise scan used for whitening, whole spokes held out, and a better image than gridding."""
    path, _ = _radial_mrd(tmp_path, small_image, units)
    out = tmp_path / "out"
    rc, err = _run([path, "--out", out, "--steps", 60, "--baselines", "zf"], capsys)
    assert rc == 0, err
    recon = nib.load(out / "recon.nii.gz")
    assert recon.shape[:2] == (64, 64)
    np.testing.assert_allclose(np.abs(np.diag(recon.affine))[:2], [220 / 64, 200 / 64], rtol=1e-5)
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"] == "none" and "methods" not in m
    assert m["sampling"]["units"].startswith("1/FOV" if units == "fov" else "normalised")
    assert "noise" in m["noise"]["method"] and "scan" in m["noise"]["method"]
    assert m["holdout_split"]["held_out_units"] == 3 and m["problem"]["kspace"]["trajectory_type"] == "radial"
    inr, grid = (_scaled_psnr(small_image, nib.load(out / f).get_fdata().squeeze())
                 for f in ("recon.nii.gz", "gridding.nii.gz"))
    assert inr > grid + 2.0, (inr, grid)


def _scaled_psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Tissue PSNR after the least-squares intensity scale (ESPIRiT's maps fix the image only up to a scale)."""
    tissue = tissue_mask(reference)
    scale = float(np.sum(reference[tissue] * image[tissue]) / np.sum(image[tissue] ** 2))
    return psnr(reference, scale * image, tissue)


def test_cli_reconstructs_npz_with_matrix_and_fov(tmp_path, small_image, capsys):
    traj = golden_angle_radial(32, (64, 64))
    maps = torch.from_numpy(birdcage_maps((64, 64), COILS))
    samples = NufftSenseOp(maps, traj)(torch.from_numpy(small_image.astype(np.complex64))).numpy()
    path = tmp_path / "radial.npz"
    np.savez(path, kspace=samples, traj=traj)
    rc, err = _run([path, "--out", tmp_path / "no", "--steps", 5], capsys)
    assert rc == 2 and "--matrix and --fov" in err and not (tmp_path / "no").exists()
    out = tmp_path / "out"
    rc, err = _run([path, "--out", out, "--steps", 20, "--baselines", "zf", "--matrix", "64,64", "--fov", "192,192"],
                   capsys)
    assert rc == 0, err
    np.testing.assert_allclose(np.diag(nib.load(out / "recon.nii.gz").affine)[:2], [3.0, 3.0])
    m = json.loads((out / "metrics.json").read_text())
    assert m["problem"]["kspace"]["format"] == "npz" and "outer k-space" in m["noise"]["method"]


def test_cli_resamples_fully_sampled_cartesian_kspace_along_a_trajectory(tmp_path, small_image, capsys):
    """Like retrospective Cartesian undersampling: the coil images of the full data are sampled along spokes and
    their root-sum-of-squares is the reference."""
    from medinr.mri.fft import fftc

    coil = birdcage_maps((64, 64), COILS) * small_image
    np.save(tmp_path / "full.npy", fftc(torch.from_numpy(coil)).numpy())
    out = tmp_path / "out"
    rc, err = _run([tmp_path / "full.npy", "--out", out, "--trajectory", "radial", "--spokes", 32, "--steps", 20,
                    "--baselines", "zf"], capsys)
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"] == "coil_rss" and m["problem"]["source"] == "measured coil images"
    undersampled = fftc(torch.from_numpy(coil)).numpy()
    undersampled[:, :, ::2] = 0
    np.save(tmp_path / "under.npy", undersampled)
    rc, err = _run([tmp_path / "under.npy", "--out", tmp_path / "o2", "--trajectory", "radial"], capsys)
    assert rc == 2 and "resamples only fully sampled" in err


@pytest.mark.parametrize("extra, message", [
    (["--trajectory", "radial", "--accel", "4"], "--accel and --center-fraction shape a Cartesian mask"),
    (["--trajectory", "radial", "--mask", "random"], "--mask undersamples Cartesian k-space"),
    (["--spokes", "24"], "--spokes / --interleaves set the readouts"),
    (["--trajectory", "radial", "--data-consistency"], "--data-consistency needs Cartesian"),
    (["--matrix", "64,64", "--fov", "200,200"], "--matrix and --fov give the image grid of a non-Cartesian .npz"),
    (["--trajectory", "zigzag"], "invalid choice: 'zigzag'"),
    (["--trajectory", "radial", "--spokes", "0"], "must be >= 1"),
    (["--matrix", "64", "--fov", "200,200"], "not 2 or 3 comma-separated sizes"),
])
def test_cli_refuses_flags_that_do_not_apply(tmp_path, image_file, capsys, extra, message):
    out = tmp_path / "out"
    rc, err = _run([image_file, "--out", out, *extra], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_cli_refuses_trajectory_and_data_consistency_for_a_radial_file(tmp_path, small_image, capsys):
    path, _ = _radial_mrd(tmp_path, small_image, noise=False)
    for extra, message in ((["--trajectory", "spiral"], "holds non-Cartesian samples with their own trajectory"),
                           (["--data-consistency"], "--data-consistency needs Cartesian")):
        rc, err = _run([path, "--out", tmp_path / "out", *extra], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert not (tmp_path / "out").exists()


def test_requests_check_non_cartesian_settings_without_torch():
    a = Acquisition(trajectory="spiral")
    assert a.spokes == 16 and Acquisition(trajectory="radial", readouts=96).spokes == 96
    assert Acquisition().spokes is None
    with pytest.raises(MedinrError, match="unknown --density"):
        Acquisition(trajectory="radial", density="cells")
    with pytest.raises(MedinrError, match="--fov needs"):
        Acquisition(fov=(200.0, float("nan")))
    request = ReconstructRequest(input="x.npz", acquisition=Acquisition(matrix=(64, 64), fov=(200.0, 200.0)))
    assert "gridding.nii.gz" in request.outputs()


@pytest.mark.parametrize("case, message", [
    ("nan_traj", "NaN or infinite"),
    ("one_dim", "'traj' must be [readouts, samples, 2 or 3]"),
    ("readouts", "matching kspace (2, 15, 64)"),
    ("radians", "fits neither 1/FOV units"),
    ("no_traj", "needs arrays 'kspace' [coils, readouts, samples] and 'traj'"),
])
def test_cli_refuses_malformed_npz_with_one_line(tmp_path, capsys, case, message):
    """A bad non-Cartesian .npz is refused before any work: one line naming the problem, exit 2, nothing written."""
    traj = golden_angle_radial(16, (32, 32))
    kspace = (np.ones((2, *traj.shape[:2])) + 0j).astype(np.complex64)
    arrays = {"kspace": kspace, "traj": traj}
    if case == "nan_traj":
        arrays["traj"] = np.where(np.arange(traj.shape[1])[None, :, None] == 3, np.nan, traj)
    elif case == "one_dim":
        arrays["traj"] = traj[..., :1]
    elif case == "readouts":
        arrays["kspace"] = kspace[:, :-1]
    elif case == "radians":
        arrays["traj"] = traj * np.pi  # neither 1/FOV units nor normalised: past the edge of k-space
    else:
        del arrays["traj"]
    path = tmp_path / f"{case}.npz"
    np.savez(path, **arrays)
    out = tmp_path / "out"
    rc, err = _run([path, "--out", out, "--matrix", "32,32", "--fov", "200,200"], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists()
