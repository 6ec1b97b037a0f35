"""Issue 20, the second audit, case by case: each hostile input gives exit 2 and one clear ``medinr: error:`` line,
no traceback and no warning before it, writes nothing, fails within 10 s and without a 1 GB jump of memory; the
readers check a file's header (type, dimensions, declared size, geometry, data elsewhere) before its data.

Audit ids are in the case names where the audit gave them (A36, D10b, D11b, J12, J16, J17); J16 and J17 are in
test_safety_outputs.py, disk-full, file-size limits, read-only folders, SIGHUP and Ctrl-C at start-up in
test_safety_subprocess.py.
"""

from __future__ import annotations

import json
import os
import re
import resource
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from hostile_files import (
    assert_refused,
    dicom_series,
    entries,
    nifti_declaring,
    nifti_with_pixdim,
    patch_dicom,
    run_cli,
    write_checkpoint,
    write_image,
)

from medinr.errors import MedinrError
from medinr.filecheck import detached_data_allowed
from medinr.io import load_image
from medinr.mri.coils import birdcage_maps
from medinr.textsafe import TerminalSafeWriter
from pipelines import cli

GB = 1 << 30


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the inputs, made small by each case -------------------------------------------------------------------------
def _img(tmp: Path) -> Path:
    return write_image(tmp / "img.nii.gz", (24, 24))


def _npy(tmp: Path, name: str, array: np.ndarray) -> Path:
    np.save(tmp / name, array)
    return tmp / name


def _kspace(tmp: Path, coils: int = 4, shape: tuple[int, int] = (24, 24), name: str = "k.npy") -> Path:
    """Fully sampled multi-coil k-space of a disc (complex64)."""
    yy, xx = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    image = ((xx**2 + yy**2) < 0.5) * (1.0 + 0.3 * xx)
    coil_images = birdcage_maps(shape, coils) * image
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil_images, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return _npy(tmp, name, k.astype(np.complex64))


def _sidecar(text: str) -> Callable[[Path], list]:
    def make(tmp: Path) -> list:
        k = _kspace(tmp)
        k.with_suffix(".json").write_text(text)
        return ["reconstruct", k]
    return make


def _h5(tmp: Path, name: str, build: Callable[[h5py.File, Path], None]) -> Path:
    with h5py.File(tmp / name, "w") as f:
        build(f, tmp)
    return tmp / name


def _nifti_bytes(tmp: Path, name: str, data: np.ndarray, offset: int, fmt: str, *values: float,
                 forms: bool = True, nifti2: bool = False) -> Path:
    """A NIfTI of ``data`` (an sform, or no forms at all) with raw header bytes at ``offset`` overwritten."""
    image_type = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    nib.save(image_type(np.asarray(data), np.eye(4) if forms else None), tmp / name)
    raw = bytearray((tmp / name).read_bytes())
    struct.pack_into(fmt, raw, offset, *values)
    (tmp / name).write_bytes(bytes(raw))
    return tmp / name


def _nifti2_affine(tmp: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel's own overflow while making the test file
        nib.save(nib.Nifti2Image(np.ones((8, 8), np.float32), np.diag([1e300, 1e300, 1.0, 1.0])), tmp / "a.nii")
    return tmp / "a.nii"


def _mha(tmp: Path, name: str, fields: str, payload: bytes = b"\0" * 64) -> Path:
    (tmp / name).write_bytes(f"ObjectType = Image\n{fields}ElementDataFile = LOCAL\n".encode() + payload)
    return tmp / name


def _rgb(tmp: Path) -> Path:
    rgb = np.zeros((8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp / "rgb.nii.gz")
    return tmp / "rgb.nii.gz"


def _dicom(tmp: Path, group: int, element: int, value: bytes, both: tuple | None = None) -> Path:
    folder = dicom_series(tmp / "dcm")
    for path in sorted(folder.iterdir()):
        patch_dicom(path, group, element, value)
        if both:
            patch_dicom(path, *both)
    return folder


def _crc(tmp: Path) -> Path:
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 32)).astype(np.float32), np.eye(4)),
             tmp / "crc.nii.gz")
    raw = bytearray((tmp / "crc.nii.gz").read_bytes())
    raw[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    (tmp / "crc.nii.gz").write_bytes(bytes(raw))
    return tmp / "crc.nii.gz"


def _nrrd(tmp: Path, name: str, fields: str, payload: bytes = b"") -> Path:
    (tmp / name).write_bytes(f"NRRD0004\ntype: float\nendian: little\nencoding: raw\n{fields}\n".encode() + payload)
    return tmp / name


def _secret(tmp: Path) -> Path:
    """A readable file outside the input's folder that a header must not pull in."""
    outside = tmp / "elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "secret.raw").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    return outside / "secret.raw"


def _inputs(tmp: Path) -> Path:
    (tmp / "in").mkdir(exist_ok=True)
    return tmp / "in"


def _not_dicom(tmp: Path) -> Path:
    (_inputs(tmp) / "a.txt").write_text("hello")
    return _inputs(tmp)


def _relative_outside(tmp: Path) -> list:
    _secret(tmp)
    header = _nrrd(_inputs(tmp), "x.nhdr", "dimension: 2\nsizes: 4 4\ndata file: ../elsewhere/secret.raw\n")
    return ["fit", header, "--allow-detached-data"]


def _landmarks(tmp: Path) -> list:
    (tmp / "fp.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp / "long.csv").write_text("x,y\n" + "1" * 200_000 + ",2\n")
    img = _img(tmp)
    return ["register", img, img, "--fixed-landmarks", tmp / "long.csv", "--moving-landmarks", tmp / "fp.csv"]


def _undersampled(tmp: Path) -> list:
    k = np.load(_kspace(tmp, name="full.npy"))
    lines = np.zeros(24, bool)
    lines[::3] = True
    lines[10:14] = True  # 4 centre lines: too few for ESPIRiT, and nothing the user can raise
    return ["reconstruct", _npy(tmp, "us.npy", k * lines)]


def _noise_kspace(tmp: Path) -> list:
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(16, 32, 32)) + 1j * rng.normal(size=(16, 32, 32))).astype(np.complex64)
    return ["reconstruct", _npy(tmp, "noise.npy", k), "--center-fraction", "0.19"]


# (command line built in a temporary folder, a fragment of the one error line)
CASES: dict[str, tuple[Callable[[Path], list], str]] = {
    # -- exit 1 "internal error" on bad input, now one line ------------------------------------------------------
    "nifti_rgb_image": (lambda t: ["fit", _rgb(t)], "holds RGB colour records"),
    "npy_structured_image": (lambda t: ["fit", _npy(t, "s.npy", np.zeros((8, 8), "f4,i4"))], "holds records"),
    "npy_string_abc": (lambda t: ["fit", _npy(t, "abc.npy", np.array("abc"))], "holds text (<U3)"),
    "npy_structured_fixed_mask": (lambda t: ["register", _img(t), _img(t), "--fixed-mask",
                                             _npy(t, "m.npy", np.zeros((24, 24), "f4,i4"))], "holds records"),
    "h5_mask_of_bytes": (lambda t: ["reconstruct", _h5(t, "m.h5", lambda f, _: (
        f.create_dataset("kspace", data=np.load(_kspace(t))), f.create_dataset("mask", data=[b"1"] * 24)))],
        "('mask') holds objects or variable-length strings"),
    "kspace_sidecar_is_a_list": (_sidecar("[1, 2]"), "expected a JSON object"),
    "kspace_sidecar_nested_100000_deep": (_sidecar("[" * 100_000 + "]" * 100_000), "nested 100000 levels deep"),
    "seed_2_to_the_64": (lambda t: ["fit", _img(t), "--seed", str(2**64)], "argument --seed"),
    "snr_1e308": (lambda t: ["reconstruct", _img(t), "--snr", "1e308"], "argument --snr: 1e308 must be <= 150"),
    "snr_minus_1e6": (lambda t: ["reconstruct", _img(t), "--snr=-1e6"], "argument --snr: -1e6 must be >= -50"),
    "batch_size_10_to_the_12": (lambda t: ["fit", _img(t), "--model", "siren", "--steps", "1", "--batch-size",
                                           str(10**12)], "out of memory"),
    "device_meta": (lambda t: ["fit", _img(t), "--device", "meta"], "unknown device 'meta'"),
    "render_device_meta": (lambda t: ["render", write_checkpoint(t / "c.inr"), "--device", "meta", "--out",
                                      t / "s.png"], "unknown device 'meta'"),
    "landmark_field_over_131072_characters": (_landmarks, "is not a landmarks CSV file: field larger"),
    "out_name_of_300_characters": (lambda t: ["fit", _img(t), "--out", t / ("o" * 300)], "too long"),
    # -- over 1 GB or 10 s before the refusal: refused from the header -------------------------------------------
    "nifti_gz_declaring_4d_float64_400x400x300x2": (
        lambda t: ["fit", nifti_declaring(t / "4d.nii.gz", (400, 400, 300, 2), np.float64, compressed_bytes=800_000)],
        "has shape (400, 400, 300, 2): expected a 2D or 3D image"),
    "h5_unwritten_chunked_complex_kspace": (lambda t: ["reconstruct", _h5(t, "u.h5", lambda f, _: f.create_dataset(
        "kspace", shape=(1, 1, 12000, 12000), dtype=np.complex64, chunks=(1, 1, 1000, 1000)))],
        "declares 1x1x12000x12000 voxels (1.1 GiB) but the file holds 0 B"),
    "dicom_declaring_12000_squared_with_512_bytes": (
        lambda t: ["fit", _dicom(t, 0x28, 0x10, struct.pack("<H", 12000), (0x28, 0x11, struct.pack("<H", 12000)))],
        "declares 12000x12000 pixels"),
    # -- more than one line (an overflow warning or ITK's output before the error) --------------------------------
    "nifti_scl_slope_1e38": (lambda t: ["fit", _nifti_bytes(t, "s.nii", np.full((8, 8), 10, np.float32), 112, "<f",
                                                            1e38)], "beyond what float32 holds"),
    "kspace_complex128_times_1e300": (lambda t: ["reconstruct", _npy(t, "c.npy", np.load(_kspace(t)).astype(
        np.complex128) * 1e300)], "holds k-space values up to"),
    "kspace_sidecar_spacing_1e308": (_sidecar('{"spacing_mm": [1e308, 1]}'), "voxel size along axis 0 is 1e+308 mm"),
    "nifti2_affine_1e300": (lambda t: ["fit", _nifti2_affine(t)], "voxel size along axis 0 is 1e+300 mm"),
    "render_plane_1e308": (lambda t: ["render", write_checkpoint(t / "c.inr"), "--plane", "1e308,1e308,0", "--out",
                                      t / "s.png"], "plane"),
    "dicom_empty_folder": (lambda t: ["fit", _inputs(t)], "holds no DICOM series"),
    "dicom_folder_without_dicom": (lambda t: ["fit", _not_dicom(t)], "holds no DICOM series"),
    "nrrd_nan_direction": (lambda t: ["fit", _nrrd(t, "nan.nrrd", "dimension: 3\nsizes: 4 4 4\nspace: "
                                      "left-posterior-superior\nspace directions: (nan,0,0) (0,1,0) (0,0,1)\n"
                                      "space origin: (0,0,0)\n", b"\0" * 256)],
                           "trouble parsing space directions info |(nan,0,0) (0,1,0) (0,0,1)|"),
    # -- exit 0 on bad input -------------------------------------------------------------------------------------
    "mha_element_spacing_1e300": (lambda t: ["fit", _mha(t, "s.mha", "NDims = 2\nDimSize = 8 8\nElementSpacing = "
                                                         "1e300 1\nElementType = MET_UCHAR\n")], "1e+300 mm"),
    "nifti2_pixdim_1e300": (lambda t: ["fit", _nifti_bytes(t, "n2.nii", np.ones((8, 8), np.float32), 112, "<d",
                                                           1e300, forms=False, nifti2=True)],
                            "voxel size along axis 0 is 1e+300 mm"),
    "npy_datetime64_image": (lambda t: ["fit", _npy(t, "d.npy", np.zeros((8, 8), "datetime64[s]"))],
                             "holds dates (datetime64)"),
    "registration_fixed_mask_0_255": (lambda t: ["register", _img(t), _img(t), "--fixed-mask", _npy(
        t, "m.npy", (np.arange(24 * 24).reshape(24, 24) % 2 * 255).astype(np.uint8))], "must hold only 0 and 1"),
    "nifti_zero_voxel_size_without_forms": (lambda t: ["fit", _nifti_bytes(t, "z.nii", np.ones((8, 8), np.float32),
                                                                           80, "<f", 0.0, forms=False)],
                                            "voxel size of 0"),
    "dicom_pixel_spacing_0": (lambda t: ["fit", _dicom(t, 0x28, 0x30, b"0\\0   ")], "PixelSpacing is '0\\\\0'"),
    # -- other ---------------------------------------------------------------------------------------------------
    "nifti_gz_wrong_crc": (lambda t: ["fit", _crc(t)], "gzip data are damaged (CRC check failed"),
    "espirit_all_zero_maps_fully_sampled_6_lines": (_noise_kspace, "ESPIRiT found no coil sensitivities"),
    "espirit_too_few_lines_in_measured_kspace": (_undersampled, "the file's own sampling has too small a calibration"),
    # -- can read what it should not -----------------------------------------------------------------------------
    "A36_nrrd_detached_header_absolute_path": (lambda t: ["fit", _nrrd(
        _inputs(t), "x.nhdr", f"dimension: 2\nsizes: 4 4\ndata file: {_secret(t)}\n")], "keeps its voxels in another"),
    "A36_nrrd_detached_header_outside_even_when_allowed": (_relative_outside,
                                                           "named without a folder, from beside its header"),
    "A36_metaimage_element_data_file_absolute": (lambda t: ["fit", _mha(
        _inputs(t), "x.mhd", f"NDims = 2\nDimSize = 4 4\nElementType = MET_FLOAT\nElementDataFile = {_secret(t)}\n"
        )], "keeps its voxels in another file"),
    "D10b_h5_virtual_dataset": (lambda t: ["reconstruct", _h5(t, "v.h5", lambda f, tmp: f.create_virtual_dataset(
        "kspace", _virtual_layout(tmp)))], "is a virtual dataset"),
    "D11b_h5_external_storage": (lambda t: ["reconstruct", _h5(t, "e.h5", lambda f, tmp: f.create_dataset(
        "kspace", shape=(4, 24, 24), dtype=np.complex64, external=[(str(_raw_kspace(tmp)), 0, 4 * 24 * 24 * 8)]))],
        "keeps its data in external files"),
    "h5_external_link": (lambda t: ["reconstruct", _h5(t, "l.h5", lambda f, tmp: f.__setitem__(
        "kspace", h5py.ExternalLink(str(_other_h5(tmp)), "kspace")))], "is a link into another file"),
}


def _other_h5(tmp: Path) -> Path:
    with h5py.File(tmp / "other.h5", "w") as f:
        f["kspace"] = np.load(_kspace(tmp))
    return tmp / "other.h5"


def _virtual_layout(tmp: Path) -> h5py.VirtualLayout:
    layout = h5py.VirtualLayout(shape=(4, 24, 24), dtype=np.complex64)
    layout[:] = h5py.VirtualSource(str(_other_h5(tmp)), "kspace", shape=(4, 24, 24))
    return layout


def _raw_kspace(tmp: Path) -> Path:
    (tmp / "raw.bin").write_bytes(np.load(_kspace(tmp)).tobytes())
    return tmp / "raw.bin"


@pytest.mark.parametrize("case", sorted(CASES))
def test_issue_20_hostile_inputs(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    make, message = CASES[case]
    args = make(tmp_path)
    if "--out" not in args:
        args += ["--out", tmp_path / ("slice.png" if args[0] == "render" else "out")]
    args += ["--quiet"] if args[0] != "render" else []
    before, peak = entries(tmp_path), _peak_rss()
    rc, err, seconds = run_cli(args, capsys)
    line = assert_refused(rc, err, message)
    assert ".cxx" not in line and not re.search(r"0x[0-9a-f]{6}", line)  # no ITK source paths or addresses
    assert "--maps simulated" not in line or "measured" not in case
    assert entries(tmp_path) == before, entries(tmp_path) ^ before  # nothing written, no staging left
    assert seconds < 10 and _peak_rss() - peak < GB


def test_espirit_advice_works_for_the_input_it_is_given(tmp_path, capsys):
    """Too few calibration lines: the advice for simulated k-space names --maps simulated (which works there),
    the one for fully sampled measured k-space --center-fraction (which works there), never one that is refused."""
    img = _img(tmp_path)
    rc, err, _ = run_cli(["reconstruct", img, "--maps", "espirit", "--center-fraction", "0.1", "--out",
                          tmp_path / "o", "--quiet"], capsys)
    assert_refused(rc, err, "raise --center-fraction, or use --maps simulated")
    rc, err, _ = run_cli(["reconstruct", _kspace(tmp_path), "--center-fraction", "0.1", "--out", tmp_path / "o",
                          "--quiet"], capsys)
    line = assert_refused(rc, err, "raise --center-fraction: the retrospective mask then keeps more centre lines")
    assert "--maps simulated" not in line


def test_J12_paths_with_terminal_escapes_are_printed_escaped(tmp_path, capsys):
    """J12: an input named ``scan<ESC>]0;pwned<BEL>.nii.gz`` was echoed raw in reconstruct's summary; everything a
    command prints on stdout now passes through the terminal-safe writer."""
    evil = tmp_path / "scan\x1b]0;pwned\x07.nii.gz"
    write_image(evil, (24, 24))
    rc = cli.main(["reconstruct", str(evil), "--preset", "fast", "--steps", "2", "--baselines", "zf", "--out",
                   str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "\x1b" not in captured.out and "\x07" not in captured.out, captured.out
    assert "scan\\x1b]0;pwned\\x07.nii.gz" in captured.out  # shown, escaped


def test_the_terminal_safe_writer_keeps_lines_and_escapes_controls():
    import io

    sink = io.StringIO()
    out = TerminalSafeWriter(sink)
    print("a\tb\x1b[31mc\u202e", "ok", file=out)
    assert sink.getvalue() == "a\tb\\x1b[31mc\\u202e ok\n"
    assert out.getvalue() == sink.getvalue()  # everything else is the wrapped stream's


def test_warnings_are_held_until_a_command_succeeds(tmp_path, capsys):
    """A warning while reading is printed after a successful run; a failing run prints its one error line only."""
    warn = _nifti_bytes(tmp_path, "w.nii", np.random.default_rng(0).random((12, 12)).astype(np.float32),
                        80, "<f", 0.0)  # pixdim[1] = 0 beside an sform: nibabel warns, the sform gives the geometry
    rc, err, _ = run_cli(["fit", warn, "--model", "siren", "--steps", "2", "--out", tmp_path / "o", "--quiet"],
                         capsys)
    assert rc == 0 and len(err) == 1 and err[0].startswith("medinr: warning: w.nii: pixdim"), err
    rc, err, _ = run_cli(["fit", warn, "--slice", "0", "--out", tmp_path / "o2"], capsys)  # refused after reading
    assert rc == 2 and len(err) == 1 and err[0].startswith("medinr: error: --slice needs a 3D image"), err


def test_A36_a_detached_data_file_beside_its_header_is_read_only_when_allowed(tmp_path):
    """--allow-detached-data lets a header read a regular file beside it; never a link, a path or a list."""
    data = np.arange(16, dtype=np.float32).reshape(4, 4)
    (tmp_path / "x.raw").write_bytes(data.tobytes())
    nhdr = _nrrd(tmp_path, "x.nhdr", "dimension: 2\nsizes: 4 4\ndata file: x.raw\n")
    mhd = _mha(tmp_path, "y.mhd", "NDims = 2\nDimSize = 4 4\nElementType = MET_FLOAT\n", b"")
    mhd.write_text(mhd.read_text().replace("ElementDataFile = LOCAL", "ElementDataFile = x.raw"))
    for header in (nhdr, mhd):
        with pytest.raises(MedinrError, match="--allow-detached-data"):
            load_image(header)
        with detached_data_allowed(True):
            array, _ = load_image(header)
        np.testing.assert_array_equal(array.T, data)  # (i, j) = ITK's (x, y): the transpose of C order
    os.symlink(_secret(tmp_path), tmp_path / "link.raw")
    for value, message in [("link.raw", "which is a link"), ("LIST", "named without a folder"),
                           ("x%03d.raw 0 2 1", "named without a folder"), ("missing.raw", "not a regular file")]:
        bad = _nrrd(tmp_path, "bad.nhdr", f"dimension: 2\nsizes: 4 4\ndata file: {value}\n")
        with detached_data_allowed(True), pytest.raises(MedinrError, match=message):
            load_image(bad)


def test_headers_are_refused_before_their_data_are_read(tmp_path, monkeypatch):
    """Declared shape, type and size are checked from the header: the 4D bomb (768 MiB of float64 in a 0.8 MB
    .nii.gz) and an unwritten 1.1 GiB HDF5 dataset are refused without allocating, even with no budget."""
    import tracemalloc

    from medinr.mri.kspace_io import load_kspace

    monkeypatch.setenv("MEDINR_MEMORY_LIMIT", "none")
    bomb = nifti_declaring(tmp_path / "4d.nii.gz", (400, 400, 300, 2), np.float64, compressed_bytes=800_000)
    unwritten = _h5(tmp_path, "u.h5", lambda f, _: f.create_dataset(
        "kspace", shape=(1, 1, 12000, 12000), dtype=np.complex64, chunks=(1, 1, 1000, 1000)))
    tracemalloc.start()
    try:
        with pytest.raises(MedinrError, match="expected a 2D or 3D image"):
            load_image(bomb)
        with pytest.raises(MedinrError, match="the file holds 0 B"):
            load_kspace(unwritten)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


def test_what_medinr_writes_it_reads_back(tmp_path):
    """Never write what we would refuse: save_image checks a geometry as load_image does."""
    from medinr.geometry import Geometry
    from medinr.io import save_image

    with pytest.raises(MedinrError, match="voxel size along axis 0 is 1e\\+300 mm"):
        save_image(tmp_path / "x.nii.gz", np.zeros((4, 4), np.float32), Geometry((4, 4), np.diag([1e300, 1, 1, 1])))
    assert os.listdir(tmp_path) == []
    g = Geometry((4, 4, 4), np.diag([1e5, 1e-5, 2.0, 1.0]))  # extreme, but inside the bounds: round trips
    save_image(tmp_path / "ok.nii.gz", np.ones((4, 4, 4), np.float32), g)
    np.testing.assert_allclose(load_image(tmp_path / "ok.nii.gz")[1].spacing, [1e5, 1e-5, 2.0], rtol=1e-6)


def test_a_zero_pixdim_is_refused_not_made_1_mm(tmp_path):
    """A NIfTI without forms and DICOM PixelSpacing 0\\0 once became 1 mm voxels (silently for DICOM)."""
    with pytest.raises(MedinrError, match="voxel size of 0"):
        load_image(nifti_with_pixdim(tmp_path / "z.nii", np.ones((8, 8)), 2, 0.0))
    good = dicom_series(tmp_path / "good")
    array, geometry = load_image(good)
    assert array.shape == (16, 16, 3) and np.allclose(geometry.spacing, [0.8, 0.8, 2.0])


def test_json_depth_is_counted_without_recursion():
    from medinr.jsonsafe import nesting_depth

    assert nesting_depth('{"a": [1, {"b": "[[[["}]}') == 3  # brackets in strings do not count
    assert nesting_depth('["a\\"]", [[1]]]') == 3  # an escaped quote does not end the string
    assert nesting_depth("[" * 100_000) == 100_000
    assert json.loads(json.dumps({"x": 1})) == {"x": 1}


def test_readers_and_argument_checks_import_without_torch():
    """Issue 20: a header error should not wait for torch. The readers, the file checks, the output folder and the
    argument types import without it, and a refused image header leaves it unloaded."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import medinr.io, medinr.filecheck, medinr.outputs, medinr.mri.kspace_io, pipelines.common\n"
            "from medinr.io import load_image\n"
            "try:\n    load_image(sys.argv[1])\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
            "print('torch' in sys.modules)\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code, "missing.nii.gz"], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout.split() == ["MedinrError", "False"], (proc.stdout, proc.stderr)
