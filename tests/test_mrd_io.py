"""ISMRMRD / MRD and non-Cartesian .npz input: files written with the ``ismrmrd`` package round-trip (values,
trajectory, geometry, noise scans), and every malformed file gives one clear error line before any output."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
import torch
from mrd_files import header_xml, write_mrd

from medinr.errors import MedinrError
from medinr.mri.coils import birdcage_maps
from medinr.mri.fft import fftc
from medinr.mri.kspace_io import MeasuredKspace, is_kspace_file, load_kspace
from medinr.mri.mrd_io import is_mrd_file, read_mrd
from medinr.mri.noncart_kspace import UNITS_FOV, UNITS_NORMALISED, NonCartesianKspace, load_npz, to_fov_units
from medinr.mri.nufft import NufftSenseOp
from medinr.mri.trajectories import golden_angle_radial
from medinr.resources import memory_budget_set_to

MATRIX = (64, 64, 1)
FOV = (220.0, 200.0, 5.0)
COILS = 4


def _phantom(n: int = 64) -> np.ndarray:
    i, j = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    return ((i / 0.8) ** 2 + (j / 0.6) ** 2 < 1).astype(np.float32) * (1 + 0.5 * (i > 0.2))


def _cartesian_kspace() -> np.ndarray:
    coil_images = birdcage_maps((64, 64), COILS) * _phantom()
    return fftc(torch.from_numpy(coil_images)).numpy()  # (C, x, y): readout first


def _noise(n: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = np.eye(COILS) + 0.3 * rng.standard_normal((COILS, COILS))
    white = (rng.standard_normal((COILS, n)) + 1j * rng.standard_normal((COILS, n))) / np.sqrt(2)
    return (mix @ white).astype(np.complex64), mix @ mix.conj().T


def test_cartesian_mrd_round_trips_with_noise_scan(tmp_path):
    kspace = _cartesian_kspace()
    noise, cov = _noise()
    lines = np.arange(64)
    path = write_mrd(tmp_path / "cart.h5", kspace.transpose(0, 2, 1), MATRIX, FOV, steps=lines, noise=noise,
                     dwell_us=(10.0, 5.0))
    assert is_mrd_file(path) and is_kspace_file(path)
    measured = load_kspace(path)
    assert isinstance(measured, MeasuredKspace)
    np.testing.assert_allclose(measured.kspace, kspace, atol=1e-6)
    assert measured.mask.all() and measured.geometry.shape == (64, 64)
    np.testing.assert_allclose(measured.geometry.spacing, [220 / 64, 200 / 64], rtol=1e-6)
    np.testing.assert_array_equal(measured.noise, noise)
    from medinr.mri.noise import noise_from_scan

    estimate = noise_from_scan(measured.noise, measured.noise_dwell_ratio)  # noise dwell 10 us, data 5 us
    assert measured.noise_dwell_ratio == 2.0
    assert np.linalg.norm(estimate.covariance - 2 * cov) / np.linalg.norm(2 * cov) < 0.1


def test_cartesian_mrd_undersampled_shifted_centre_and_repeated_lines(tmp_path):
    kspace = _cartesian_kspace()
    lines = np.array([0, 5, 20, 28, 29, 30, 31, 32, 33, 34, 35, 50, 63, 32])  # line 32 twice
    readouts = kspace[:, :, lines].transpose(0, 2, 1).copy()
    readouts[:, -1] += 2.0  # the repeat differs: the reader averages the two
    xml = header_xml(MATRIX, FOV, "cartesian", COILS, center=(40, 0))  # k = 0 is step 40 in this file
    path = write_mrd(tmp_path / "under.h5", readouts, MATRIX, FOV, steps=lines + 8, xml=xml)
    measured = read_mrd(path)
    assert np.flatnonzero(measured.mask[0]).tolist() == sorted(set(lines.tolist()))
    np.testing.assert_allclose(measured.kspace[:, :, 5], kspace[:, :, 5], atol=1e-6)
    np.testing.assert_allclose(measured.kspace[:, :, 32], kspace[:, :, 32] + 1.0, atol=1e-5)
    assert measured.meta["repeated_lines_averaged"] == 2
    assert not measured.kspace[:, :, 6].any()


def _radial_file(tmp_path, units: str = "fov", name: str = "radial.h5", **kwargs):
    grid = MATRIX[:2]
    traj = golden_angle_radial(16, grid)
    maps = torch.from_numpy(birdcage_maps(grid, COILS))
    samples = NufftSenseOp(maps, traj)(torch.from_numpy(_phantom().astype(np.complex64))).numpy()
    stored = traj / np.array(grid) if units == "normalised" else traj
    return write_mrd(tmp_path / name, samples, MATRIX, FOV, traj=stored, **kwargs), samples, traj


@pytest.mark.parametrize("units", ["fov", "normalised"])
def test_radial_mrd_round_trips_in_either_unit_system(tmp_path, units):
    path, samples, traj = _radial_file(tmp_path, units, noise=_noise(256)[0])
    measured = load_kspace(path)
    assert isinstance(measured, NonCartesianKspace)
    np.testing.assert_allclose(measured.samples, samples, atol=1e-6)
    np.testing.assert_allclose(measured.traj, traj, atol=1e-4)
    assert measured.units == (UNITS_FOV if units == "fov" else UNITS_NORMALISED)
    assert measured.matrix == (64, 64) and measured.fov_mm == (220.0, 200.0)
    assert measured.noise.shape == (COILS, 256) and measured.noise_estimate().covariance.shape == (COILS, COILS)
    assert measured.describe()["trajectory_type"] == "radial"


def test_scanner_orientation_gives_the_affine(tmp_path):
    orient = {"read_dir": (0.0, 1.0, 0.0), "phase_dir": (1.0, 0.0, 0.0), "slice_dir": (0.0, 0.0, -1.0),
              "position": (10.0, -20.0, 30.0)}
    path, _, _ = _radial_file(tmp_path, overrides={r: dict(orient) for r in range(16)})
    geometry = read_mrd(path).geometry
    centre = geometry.affine @ np.array([32, 32, 0, 1.0])
    np.testing.assert_allclose(centre[:3], [-10.0, 20.0, 30.0], atol=1e-4)  # LPS position -> RAS
    np.testing.assert_allclose(geometry.affine[:3, 0], [0, -220 / 64, 0], atol=1e-5)  # readout along -y (RAS)


def test_stack_of_stars_takes_kz_from_the_partition_counter(tmp_path):
    traj = golden_angle_radial(6, (32, 32))
    parts = np.repeat(np.arange(4), 6)
    samples = np.ones((2, 24, 64), np.complex64)
    path = write_mrd(tmp_path / "sos.h5", samples, (32, 32, 4), (200.0, 200.0, 40.0), traj=np.tile(traj, (4, 1, 1)),
                     steps=np.stack([np.zeros(24, int), parts], 1), xml=header_xml((32, 32, 4), (200.0, 200.0, 40.0),
                                                                                   "radial", 2, center=(0, 2)))
    measured = read_mrd(path)
    assert measured.traj.shape == (24, 64, 3) and measured.matrix == (32, 32, 4)
    assert sorted(np.unique(measured.traj[..., 2]).tolist()) == [-2, -1, 0, 1]


def test_fastmri_h5_still_dispatches_to_the_fastmri_reader(tmp_path):
    import h5py

    path = tmp_path / "fastmri.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = _cartesian_kspace()[None].astype(np.complex64)
        f["ismrmrd_header"] = header_xml(MATRIX, FOV, "cartesian", COILS)
    assert not is_mrd_file(path)
    assert isinstance(load_kspace(path), MeasuredKspace)


def test_npz_input_with_matrix_and_fov_from_the_caller(tmp_path):
    traj = golden_angle_radial(8, (32, 32))
    kspace = (np.ones((2, 8, 64)) + 1j).astype(np.complex64)
    path = tmp_path / "radial.npz"
    np.savez(path, kspace=kspace, traj=traj)
    assert is_kspace_file(path)
    measured = load_kspace(path, matrix=(32, 32), fov_mm=(180.0, 180.0))
    assert isinstance(measured, NonCartesianKspace) and measured.units == UNITS_FOV
    np.testing.assert_allclose(measured.geometry.spacing, [180 / 32] * 2)
    with pytest.raises(MedinrError, match="--matrix and --fov"):
        load_npz(path)
    with pytest.raises(MedinrError, match="fits neither"):
        load_npz(path, matrix=(256, 256), fov_mm=(180.0, 180.0))  # the wrong matrix is caught by the units check
    np.savez(tmp_path / "nan.npz", kspace=np.where(np.arange(64) == 3, np.nan, kspace), traj=traj)
    with pytest.raises(MedinrError, match="NaN"):
        load_npz(tmp_path / "nan.npz", (32, 32), (180.0, 180.0))
    np.savez(tmp_path / "far.npz", kspace=kspace, traj=traj, matrix=[32, 32], fov_mm=[1e300, 180.0])
    with pytest.raises(MedinrError, match="voxel size along axis 0"):
        load_npz(tmp_path / "far.npz")
    np.savez(tmp_path / "bad.npz", kspace=kspace, traj=traj[..., :1])
    with pytest.raises(MedinrError, match="'traj' must be"):
        load_npz(tmp_path / "bad.npz", (32, 32), (180.0, 180.0))


def test_trajectory_units_detection():
    traj = golden_angle_radial(8, (64, 64))
    assert to_fov_units(traj, (64, 64), "x")[1] == UNITS_FOV
    converted, units = to_fov_units(traj / 64, (64, 64), "x")
    assert units == UNITS_NORMALISED and np.allclose(converted, traj, atol=1e-4)
    with pytest.raises(MedinrError, match="fits neither"):
        to_fov_units(traj * 2 * np.pi / 64, (64, 64), "x")  # radians per voxel


def _malformed(tmp_path, case: str):
    kspace = _cartesian_kspace().transpose(0, 2, 1)
    lines = np.arange(64)
    path = tmp_path / f"{case}.h5"
    if case == "no trajectory and no counters":
        return write_mrd(path, kspace, MATRIX, FOV), "neither a trajectory nor encoding counters"
    if case == "radial header without trajectory":
        return write_mrd(path, kspace, MATRIX, FOV, steps=lines, trajectory="radial"), "carry none"
    if case == "trajectory of the wrong dimension":
        traj = np.zeros((64, 64, 4), np.float32)
        return write_mrd(path, kspace, MATRIX, FOV, traj=traj), "trajectory of 4 dimensions"
    if case == "3D trajectory on a 2D encoding":
        traj = np.random.default_rng(0).uniform(-30, 30, (64, 64, 3)).astype(np.float32)
        return write_mrd(path, kspace, MATRIX, FOV, traj=traj), "3D trajectory for a 2D encoding"
    if case == "mismatched coil counts":
        bad = {5: {"data": kspace[:3, 5]}}
        return write_mrd(path, kspace, MATRIX, FOV, steps=lines, overrides=bad), "different coil counts"
    if case == "NaN samples":
        data = kspace[:, 7].copy()
        data[1, 3] = np.nan
        return write_mrd(path, kspace, MATRIX, FOV, steps=lines, overrides={7: {"data": data}}), "NaN"
    if case == "zero acquisitions":
        with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dset:
            dset.write_xml_header(header_xml(MATRIX, FOV, "cartesian", COILS))
        return path, "no acquisitions"
    if case == "trajectory in radians":
        path, _, _ = _radial_file(tmp_path, name=path.name)
        traj = golden_angle_radial(16, MATRIX[:2]) * 2 * np.pi / 64
        return write_mrd(tmp_path / "rad.h5", np.ones((COILS, 16, 128), np.complex64), MATRIX, FOV,
                         traj=traj), "fits neither"
    if case == "invalid header":
        return write_mrd(path, kspace, MATRIX, FOV, steps=lines, xml="<ismrmrdHeader>"), "invalid ISMRMRD XML"
    raise AssertionError(case)


MALFORMED = ["no trajectory and no counters", "radial header without trajectory", "trajectory of the wrong dimension",
             "3D trajectory on a 2D encoding", "mismatched coil counts", "NaN samples", "zero acquisitions",
             "trajectory in radians", "invalid header"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_mrd_files_give_one_clear_line(tmp_path, case):
    path, message = _malformed(tmp_path, case)
    with pytest.raises(MedinrError, match=message) as info:
        load_kspace(path)
    assert "\n" not in str(info.value)


def test_declared_sizes_over_the_budget_are_refused_before_reading_samples(tmp_path, monkeypatch):
    import medinr.mri.mrd_io as mrd_io

    big = (4096, 4096, 1)
    xml = header_xml(big, FOV, "cartesian", COILS)
    path = write_mrd(tmp_path / "big.h5", _cartesian_kspace().transpose(0, 2, 1), big, FOV, steps=np.arange(64),
                     xml=xml)

    def never(*args, **kwargs):
        raise AssertionError("samples were read before the budget check")

    monkeypatch.setattr(mrd_io, "_read_arrays", never)
    with memory_budget_set_to(64 << 20), pytest.raises(MedinrError, match="budget"):
        read_mrd(path)


def _reaches_outside(tmp_path, case: str):
    """A valid radial MRD file with something added that reads data from another file."""
    import h5py

    path, _, _ = _radial_file(tmp_path, name=f"{case.replace(' ', '_')}.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros((4, 4), np.complex64)
    with h5py.File(path, "a") as f:
        if case == "external link":
            f["dataset/waveforms"] = h5py.ExternalLink(str(other), "x")
            return path, "is a link into another file"
        if case == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(4, 4), dtype=np.complex64)
            layout[:] = h5py.VirtualSource(str(other), "x", shape=(4, 4))
            f.create_virtual_dataset("dataset/image_0", layout)
            return path, "is a virtual dataset"
        raw = tmp_path / "raw.bin"
        raw.write_bytes(np.zeros(16, np.complex64).tobytes())
        f.create_dataset("dataset/ext", shape=(4, 4), dtype=np.complex64, external=[(str(raw), 0, 128)])
        return path, "keeps its data in external files"


@pytest.mark.parametrize("case", ["external link", "virtual dataset", "external storage"])
def test_mrd_files_that_reach_into_other_files_are_refused(tmp_path, case):
    path, message = _reaches_outside(tmp_path, case)
    with pytest.raises(MedinrError, match=message):
        read_mrd(path)


@pytest.mark.parametrize("fov, message", [((0.0, 200.0, 5.0), "voxel size along axis 0 is 0 mm"),
                                          ((220.0, 1e12, 5.0), "voxel size along axis 1 is 1.56e\\+10 mm")])
def test_mrd_header_field_of_view_is_checked(tmp_path, fov, message):
    kspace = _cartesian_kspace().transpose(0, 2, 1)
    path = write_mrd(tmp_path / "fov.h5", kspace, MATRIX, fov, steps=np.arange(64))
    with pytest.raises(MedinrError, match=message):
        read_mrd(path)


CLI_REFUSED = ["no trajectory and no counters", "trajectory of the wrong dimension", "mismatched coil counts",
               "NaN samples", "3D trajectory on a 2D encoding", "trajectory in radians"]


@pytest.mark.parametrize("case", CLI_REFUSED + ["external link"])
def test_cli_refuses_a_malformed_mrd_file_with_exit_2_and_writes_nothing(tmp_path, capsys, case):
    from pipelines.cli import main

    path, message = _reaches_outside(tmp_path, case) if case == "external link" else _malformed(tmp_path, case)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder left
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medinr: error:") and message in err[0], err


def test_cli_reconstructs_a_cartesian_mrd_file_on_its_encoded_grid(tmp_path, capsys):
    """`medinr reconstruct FILE.h5` on Cartesian MRD: retrospective undersampling, the FOV in the NIfTI affine."""
    import json

    import nibabel as nib

    from pipelines.cli import main

    path = write_mrd(tmp_path / "cart.h5", _cartesian_kspace().transpose(0, 2, 1), MATRIX, FOV, steps=np.arange(64))
    out = tmp_path / "out"
    rc = main(["reconstruct", str(path), "--out", str(out), "--steps", "20", "--quiet", "--baselines", "zf",
               "--center-fraction", "0.25"])
    assert rc == 0, capsys.readouterr().err
    affine = nib.load(out / "recon.nii.gz").affine
    np.testing.assert_allclose(np.diag(affine)[:2], [220 / 64, 200 / 64], rtol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["reference"] == "fully_sampled_rss"


# -- readout oversampling -----------------------------------------------------------------------------------------
def _oversampled_kspace() -> np.ndarray:
    """4 coils on a 128 x 64 encoded grid (readout first) whose object lies inside the central 64 x 64."""
    image = np.zeros((128, 64), np.float32)
    image[32:96] = _phantom()
    coil_images = birdcage_maps((128, 64), COILS) * image
    return fftc(torch.from_numpy(coil_images.astype(np.complex64))).numpy()


def _central_half(kspace: np.ndarray) -> np.ndarray:
    from medinr.mri.fft import ifftc

    return ifftc(torch.from_numpy(kspace)).numpy()[:, 32:96]


def test_fastmri_header_removes_the_readout_oversampling_and_gives_the_voxels(tmp_path):
    """fastMRI's `ismrmrd_header` encodes 2x the field of view along x: the image is the central half (as
    fastMRI's own reference images), on the header's voxels, each kept voxel where it was."""
    import h5py

    from medinr.mri.fft import ifftc

    kspace = _oversampled_kspace()
    path = tmp_path / "fastmri.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = np.stack([kspace, kspace])  # (slices, coils, x, y)
        f["ismrmrd_header"] = header_xml((128, 64, 1), (440.0, 200.0, 5.0), "cartesian", COILS,
                                         recon_matrix=(64, 64, 1), recon_fov_mm=(220.0, 200.0, 5.0))
    measured = load_kspace(path)
    assert measured.kspace.shape == (COILS, 64, 64) and measured.mask.all()
    np.testing.assert_allclose(ifftc(torch.from_numpy(measured.kspace)).numpy(), _central_half(kspace), atol=1e-5)
    np.testing.assert_allclose(measured.geometry.spacing, [440 / 128, 200 / 64])
    assert measured.meta["readout_oversampling_removed"] == {"encoded_samples": 128, "kept_samples": 64}
    kept = load_kspace(path, keep_oversampling=True)
    assert kept.kspace.shape == (COILS, 128, 64)
    np.testing.assert_allclose(measured.geometry.affine @ [32, 10, 0, 1], kept.geometry.affine @ [64, 10, 0, 1])


def test_mrd_header_removes_the_readout_oversampling(tmp_path):
    kspace = _oversampled_kspace()
    orient = {"read_dir": (1.0, 0.0, 0.0), "phase_dir": (0.0, 1.0, 0.0), "slice_dir": (0.0, 0.0, 1.0),
              "position": (10.0, -20.0, 30.0)}
    xml = header_xml((128, 64, 1), (440.0, 200.0, 5.0), "cartesian", COILS, recon_matrix=(64, 64, 1),
                     recon_fov_mm=(220.0, 200.0, 5.0))
    path = write_mrd(tmp_path / "os.h5", kspace.transpose(0, 2, 1), (128, 64, 1), (440.0, 200.0, 5.0),
                     steps=np.arange(64), xml=xml, overrides={r: dict(orient) for r in range(64)})
    measured, kept = read_mrd(path), read_mrd(path, keep_oversampling=True)
    assert measured.kspace.shape == (COILS, 64, 64) and kept.kspace.shape == (COILS, 128, 64)
    np.testing.assert_allclose(measured.kspace, fftc(torch.from_numpy(_central_half(kspace))).numpy(), atol=1e-5)
    centre = measured.geometry.affine @ np.array([32, 32, 0, 1.0])
    np.testing.assert_allclose(centre[:3], [-10.0, 20.0, 30.0], atol=1e-4)  # the header's position stays the centre


def test_oversampling_removal_drops_the_samples_a_partial_echo_did_not_cover():
    from medinr.geometry import Geometry
    from medinr.mri.measured import remove_readout_oversampling

    kspace = _oversampled_kspace()
    full = remove_readout_oversampling(MeasuredKspace(kspace, None, Geometry((128, 64)), "full"), 64)
    partial = kspace.copy()
    partial[:, :30] = 0  # the first 30 of 128 readout samples were not acquired
    partial[:, :, 1::2] = 0  # and every other line was skipped
    cut = remove_readout_oversampling(MeasuredKspace(partial, None, Geometry((128, 64)), "partial"), 64)
    # new sample j lies at original 2j; kept where originals 2j-2..2j+2 were all acquired
    assert np.flatnonzero(cut.mask[:, 0]).tolist() == list(range(16, 64))
    assert not cut.mask[:, 1::2].any() and not cut.kspace[:, ~cut.mask].any()
    error = np.abs(cut.kspace - full.kspace)[:, cut.mask].max()
    assert error < 3e-3 * np.abs(full.kspace).max()


def test_cli_reconstructs_an_oversampled_mrd_file_on_the_prescribed_field_of_view(tmp_path, capsys):
    import json

    import nibabel as nib

    from pipelines.cli import main

    xml = header_xml((128, 64, 1), (440.0, 200.0, 5.0), "cartesian", COILS, recon_matrix=(64, 64, 1),
                     recon_fov_mm=(220.0, 200.0, 5.0))
    path = write_mrd(tmp_path / "os.h5", _oversampled_kspace().transpose(0, 2, 1), (128, 64, 1), (440.0, 200.0, 5.0),
                     steps=np.arange(64), xml=xml)
    args = ["--steps", "10", "--quiet", "--baselines", "zf", "--center-fraction", "0.25"]
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "out"), *args]) == 0, capsys.readouterr().err
    assert nib.load(tmp_path / "out" / "recon.nii.gz").shape[:2] == (64, 64)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["problem"]["file"]["readout_oversampling_removed"]["kept_samples"] == 64
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "kept"), "--keep-oversampling", *args]) == 0
    assert nib.load(tmp_path / "kept" / "recon.nii.gz").shape[:2] == (128, 64)


@pytest.mark.parametrize("header, message", [(np.arange(4), "is not one XML string"),
                                             ("<ismrmrdHeader><broken", "invalid ISMRMRD XML header")])
def test_a_malformed_fastmri_header_gives_one_clear_line(tmp_path, header, message):
    import h5py

    path = tmp_path / "fastmri.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = _cartesian_kspace()[None]
        f["ismrmrd_header"] = header
    with pytest.raises(MedinrError, match=message):
        load_kspace(path)


def test_cli_refuses_a_fastmri_file_with_a_malformed_header_with_exit_2_and_writes_nothing(tmp_path, capsys):
    import h5py

    from pipelines.cli import main

    path = tmp_path / "fastmri.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = _oversampled_kspace()[None]
        f["ismrmrd_header"] = "<ismrmrdHeader><broken"
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out), "--quiet", "--steps", "5"]) == 2
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["fastmri.h5"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medinr: error:") and "invalid ISMRMRD XML header" in err[0], err


# -- fully sampled scans stored on a larger grid ------------------------------------------------------------------
def _fastmri_padded(tmp_path, acquired: slice) -> str:
    """A fully sampled fastMRI-style slice whose phase encodes outside ``acquired`` are stored as zeros (the knee
    files' padding outside the header's encoding limits; partial Fourier on one side)."""
    import h5py

    kspace = _cartesian_kspace()
    kspace[:, :, : acquired.start] = 0
    kspace[:, :, acquired.stop:] = 0
    path = tmp_path / "padded.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = kspace[None]
    return str(path)


@pytest.mark.parametrize("acquired", [slice(4, 60), slice(0, 40)], ids=["zero-padded edges", "partial Fourier"])
def test_a_full_scan_with_unacquired_edges_is_undersampled_retrospectively(tmp_path, acquired):
    """Zero edges do not make a full scan 'already undersampled': --accel applies inside the acquired box."""
    from medinr.mri.problem import problem_from_kspace

    measured = load_kspace(_fastmri_padded(tmp_path, acquired))
    problem = problem_from_kspace(measured, None, 4.0, 0.125, "espirit", seed=0)
    assert problem.reference_kind == "fully_sampled_rss"
    assert problem.settings["acquired_box"] == [[0, 64], [acquired.start, acquired.stop]]
    lines = problem.mask.mask.any(axis=0)
    assert not lines[: acquired.start].any() and not lines[acquired.stop:].any()
    assert 64 / 4 * 0.6 <= lines.sum() <= 64 / 4 * 1.2  # about a quarter of the grid's lines, the padding never
    assert lines[28:36].all()  # the calibration lines at the centre


def test_a_small_acquired_block_stays_a_measured_undersampling(tmp_path):
    """Only the central lines (a calibration or low-resolution scan): used as acquired, --mask refused."""
    from medinr.mri.problem import problem_from_kspace

    measured = load_kspace(_fastmri_padded(tmp_path, slice(24, 40)))
    problem = problem_from_kspace(measured, None, 4.0, 0.08, "espirit", seed=0)
    assert problem.reference_kind == "none" and problem.mask.mask.any(axis=0).sum() == 16
    with pytest.raises(MedinrError, match="already undersampled"):
        problem_from_kspace(measured, "random", 4.0, 0.08, "espirit", seed=0)


@pytest.mark.parametrize("marker", ["reconstruction_esc", "header"])
def test_fastmri_single_coil_files_are_read_as_slices_of_one_coil(tmp_path, marker):
    """fastMRI's single-coil layout is (slices, x, y): read as coils, a 3-slice file became 3 coils of one slice."""
    import h5py

    slices = np.stack([_cartesian_kspace()[0] * (1 + s) for s in range(3)])  # (slices, x, y), one coil
    path = tmp_path / "singlecoil.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = slices.astype(np.complex64)
        if marker == "reconstruction_esc":
            f["reconstruction_esc"] = np.zeros((3, 32, 32), np.float32)
        else:
            f["ismrmrd_header"] = header_xml(MATRIX, FOV, "cartesian", 15)  # the coils of the emulated single coil
    middle = load_kspace(path)
    assert middle.kspace.shape == (1, 64, 64)
    np.testing.assert_allclose(middle.kspace[0], slices[1], rtol=1e-6)
    assert load_kspace(path, slice_index=0).kspace.shape == (1, 64, 64)


def test_a_3d_kspace_whose_header_counts_its_coils_stays_one_slice_of_coils(tmp_path):
    import h5py

    path = tmp_path / "coils.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = _cartesian_kspace().astype(np.complex64)  # (coils, x, y)
        f["ismrmrd_header"] = header_xml(MATRIX, FOV, "cartesian", COILS)
    assert load_kspace(path).kspace.shape == (COILS, 64, 64)
