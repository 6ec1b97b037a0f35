"""Fuzzing the ways hostile data gets in: numeric CLI options, checkpoint headers, NIfTI headers, and (issue 20)
nested JSON sidecars, arrays of any type, header-declared sizes and references to data in other files.

Every draw must end in exit 0 (the input was legitimate after all) or exit 2 with exactly one
``medinr: error:`` line: never an internal error or a traceback, never a file written on refusal, never raw
control characters on the terminal, and never a jump of the process's peak memory by 1 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import struct
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hostile_files import read_header, run_cli, write_checkpoint, write_header
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.cli import build_parser

#: The suite's profile is derandomized: the same 40 examples per test on every run and machine, so a random draw
#: never decides CI. ``MEDINR_FUZZ_EXAMPLES=1000`` runs a deeper, random search instead; every example that ever
#: failed is kept below as an explicit ``@example`` and runs in both profiles.
_DEEP = os.environ.get("MEDINR_FUZZ_EXAMPLES")
settings.register_profile("medinr-suite", max_examples=40, derandomize=True, deadline=None,
                          suppress_health_check=list(HealthCheck), database=None)
settings.register_profile("medinr-deep", max_examples=int(_DEEP or 1000), derandomize=False, deadline=None,
                          suppress_health_check=list(HealthCheck), database=None, print_blob=True)
FUZZ = settings(settings.get_profile("medinr-deep" if _DEEP else "medinr-suite"))
GB = 1 << 30


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _check_outcome(rc: int, err: list[str], written: bool) -> None:
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("medinr: error: "), err
        assert not written, "a refused run left a file behind"
    assert not any("Traceback" in line or "internal error" in line for line in err), err
    assert not any(c in line for line in err for c in "\x1b\x07\x9b"), err


# -- numeric options ---------------------------------------------------------------------------------------------
def _numeric_options() -> list[tuple[str, str, argparse.Action]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and getattr(action.type, "__name__", "") in ("float", "int"):
                found.append((command, action.option_strings[0], action))
    return found


OPTIONS = _numeric_options()
POSITIONALS = {"fit": ["img"], "reconstruct": ["img"], "register": ["a", "b"], "render": ["c.inr"], "info": ["c"],
               "batch": ["cases.csv"]}


def test_no_numeric_option_takes_a_bare_float():
    """A bare ``type=float`` accepts nan and inf; every numeric option uses a validated type instead."""
    assert OPTIONS
    bare = [f"{c} {o}" for c, o, a in OPTIONS if a.type is float]
    assert not bare, bare


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "-inf", "1e400", "0x10", "", " ", "1,5", "½", "1e-400", "--", "9" * 5000]),
    st.text(max_size=8),
)


@FUZZ
@given(which=st.integers(0, len(OPTIONS) - 1), text=NUMBER_TEXT)
def test_numeric_options_parse_to_a_checked_number_or_one_error_line(capsys, which, text):
    command, option, action = OPTIONS[which]
    argv = [command, *POSITIONALS[command], f"{option}={text}"] + (["--out", "o"] if command != "info" else [])
    capsys.readouterr()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.code == 2 and len(err) == 1 and err[0].startswith("medinr: error: "), err
        return
    value = getattr(args, action.dest)
    assert isinstance(value, (int, float)) and math.isfinite(value), (option, text, value)


# -- checkpoint headers ------------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False, width=32)
    | st.text(max_size=12) | st.sampled_from([10**9, -5, 2000, 1e308, "nonsense", "\x1b[31m"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
META_PATHS = ["format", "format_version", "medinr_version", "model", "model.family", "model.config",
              "model.config.hidden", "model.config.layers", "model.config.in_features", "model.config.out_features",
              "model.config.omega_0", "output", "output.kind", "output.scale", "output.offset", "output.units",
              "geometry", "geometry.shape", "geometry.affine", "geometry.spacing_mm", "coords", "world_box", "extra"]


def _mutate(meta: dict, path: str, value, delete: bool) -> None:
    keys = path.split(".")
    node = meta
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            return
        node = node[k]
    if delete:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("fuzz") / "good.inr")


@FUZZ
@given(path=st.sampled_from(META_PATHS), value=JSON_VALUES, delete=st.booleans(),
       tensor_change=st.sampled_from([None, "dtype", "shape", "offsets", "extra_tensor"]))
def test_crafted_checkpoint_headers(capsys, good_checkpoint, path, value, delete, tensor_change):
    header, data = read_header(good_checkpoint)
    meta = json.loads(header["__metadata__"]["medinr"])
    _mutate(meta, path, value, delete)
    header["__metadata__"]["medinr"] = json.dumps(meta)
    name = next(k for k in header if k != "__metadata__")
    if tensor_change == "dtype":
        header[name]["dtype"] = "F64"
    elif tensor_change == "shape":
        header[name]["shape"] = [10**6, 10**6]
    elif tensor_change == "offsets":
        header[name]["data_offsets"] = [0, 10**12]
    elif tensor_change == "extra_tensor":
        header["evil"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    folder = Path(tempfile.mkdtemp())
    try:
        bad = write_header(folder / "bad.inr", header, data)
        peak = _peak_rss()
        for args in (["info", bad], ["render", bad, "--size", "8x8", "--out", folder / "s.png"]):
            rc, err, seconds = run_cli(args, capsys)
            _check_outcome(rc, err, written=(folder / "s.png").exists() and args[0] == "render")
            assert rc == 0 or seconds < 10
        assert _peak_rss() - peak < GB
    finally:
        shutil.rmtree(folder)


# -- NIfTI headers -----------------------------------------------------------------------------------------------
_FIELDS = {  # byte offset and struct format of NIfTI-1 header fields
    "dim": (40, "<8h"), "datatype": (70, "<h"), "bitpix": (72, "<h"), "pixdim": (76, "<8f"),
    "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "scl_inter": (116, "<f"),
    "qform_code": (252, "<h"), "sform_code": (254, "<h"), "quatern": (256, "<6f"), "srow": (280, "<12f"),
}
SHORTS = st.integers(-32768, 32767) | st.sampled_from([0, 1, 2, 3, 11, 12, 1000, 30000])
FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, -1.0, 1e30])


def _field_values(name: str):
    fmt = _FIELDS[name][1]
    n = struct.calcsize(fmt) // struct.calcsize(fmt[-1])
    element = SHORTS if fmt[-1] == "h" else FLOATS
    return st.lists(element, min_size=n, max_size=n)


@st.composite
def nifti_mutations(draw):
    names = draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=3, unique=True))
    return [(name, draw(_field_values(name))) for name in names]


@FUZZ
@given(mutations=nifti_mutations(), gz=st.booleans())
# issue 20: failed `make test` on a fresh clone (an overflow warning line before the error line)
@example(mutations=[("scl_slope", [3.4e8]), ("pixdim", [1.0, 1e30, 1e30, 1e30, 1.0, 1.0, 1.0, 1.0])], gz=False)
@example(mutations=[("scl_slope", [3.4e8]), ("pixdim", [1e30] * 8), ("sform_code", [0])], gz=True)
@example(mutations=[("scl_slope", [1e38])], gz=False)  # issue 20: overflow warning before the error line
@example(mutations=[("pixdim", [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), ("qform_code", [0]), ("sform_code", [0])],
         gz=False)  # issue 20: a zero voxel size silently became 1 mm
def test_crafted_nifti_headers(capsys, monkeypatch, mutations, gz):
    monkeypatch.setenv("MEDINR_MEMORY_LIMIT", "512M")
    folder = Path(tempfile.mkdtemp())
    try:
        img = nib.Nifti1Image(np.random.default_rng(0).random((12, 12)).astype(np.float32), np.eye(4))
        nib.save(img, folder / "base.nii")
        raw = bytearray((folder / "base.nii").read_bytes())
        for name, values in mutations:
            offset, fmt = _FIELDS[name]
            struct.pack_into(fmt, raw, offset, *values)
        path = folder / ("x.nii.gz" if gz else "x.nii")
        if gz:
            import gzip

            path.write_bytes(gzip.compress(bytes(raw)))
        else:
            path.write_bytes(bytes(raw))
        out = folder / "out"
        peak = _peak_rss()
        rc, err, seconds = run_cli(["fit", path, "--model", "siren", "--model-options", '{"hidden": 8, "layers": 1}',
                                    "--steps", "1", "--out", out, "--quiet"], capsys)
        _check_outcome(rc, err, written=out.exists())
        assert (rc == 0 or seconds < 10) and _peak_rss() - peak < GB  # 10 s: refusals; a fit may take longer
    finally:
        shutil.rmtree(folder)


# -- issue 20: nested JSON, non-numeric types, declared sizes, data from elsewhere ---------------------------------
# These call the readers directly (faster than the CLI, whose one-line contract test_safety*.py covers): every
# draw must load or raise MedinrError, quickly, without a large allocation, and never read a file that the input
# names outside its own folder.
from hypothesis.extra import numpy as npst  # noqa: E402

from medinr.errors import MedinrError  # noqa: E402
from medinr.filecheck import detached_data_allowed  # noqa: E402
from medinr.io import load_image  # noqa: E402
from medinr.mri.kspace_io import load_kspace  # noqa: E402

SECRET = 1234.5  # the value every voxel of a file outside the input's folder holds


def _reads_cleanly(read, *args) -> object:
    """``read(*args)``: its result, or None for a MedinrError; anything else fails the test."""
    import tracemalloc

    tracemalloc.start()
    try:
        return read(*args)
    except MedinrError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), repr(exc)
        return None
    finally:
        assert tracemalloc.get_traced_memory()[1] < 256 << 20
        tracemalloc.stop()


JSON_NESTED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["spacing_mm", "a", ""]), inner,
                                                                max_size=3),
    max_leaves=12,
)


@st.composite
def sidecar_texts(draw):
    """A k-space sidecar: any JSON value, sometimes wrapped thousands of levels deep, sometimes not JSON."""
    value = draw(JSON_NESTED | st.fixed_dictionaries({"spacing_mm": st.lists(
        st.floats() | st.integers(-(10**400), 10**400) | st.text(max_size=3), max_size=4)}))
    try:
        text = json.dumps(value)
    except ValueError:
        text = "{"
    depth = draw(st.sampled_from([0, 0, 1, 31, 33, 5000, 100_000]))
    wrap = draw(st.sampled_from(["[]", "{}"]))
    if wrap == "{}":
        return '{"a": ' * depth + text + "}" * depth
    return "[" * depth + text + "]" * depth + draw(st.sampled_from(["", "", "]", "NaN", " x"]))


@FUZZ
@given(text=sidecar_texts())
def test_kspace_sidecars_of_any_json(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("sidecar")
    np.save(folder / "k.npy", (np.ones((2, 8, 8)) + 1j).astype(np.complex64))
    (folder / "k.json").write_text(text)
    measured = _reads_cleanly(load_kspace, folder / "k.npy")
    if measured is not None:
        assert np.all(np.isfinite(measured.geometry.affine)) and np.all(measured.geometry.spacing > 0)


ANY_DTYPE = npst.nested_dtypes(max_itemsize=64) | npst.scalar_dtypes() | npst.array_dtypes(allow_subarrays=True)


@FUZZ
@given(dtype=ANY_DTYPE, shape=npst.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5))
def test_arrays_of_any_type_and_shape_as_images_and_kspace(tmp_path_factory, dtype, shape):
    folder = tmp_path_factory.mktemp("dtype")
    np.save(folder / "a.npy", np.zeros(shape, dtype=dtype), allow_pickle=False)
    image = _reads_cleanly(load_image, folder / "a.npy")
    if image is not None:
        array, geometry = image
        assert np.dtype(dtype).kind in "biufc" and array.dtype in (np.float32, np.complex64)
        assert array.ndim in (2, 3) and geometry.shape == array.shape
    measured = _reads_cleanly(load_kspace, folder / "a.npy")
    if measured is not None:
        assert np.dtype(dtype).kind == "c" and measured.kspace.dtype == np.complex64


DECLARED = st.lists(st.integers(0, 2**40) | st.integers(0, 40), min_size=0, max_size=6)


@FUZZ
@given(shape=DECLARED, dtype=st.sampled_from(["<f4", "<f8", "<c16", "|u1", "<i8"]), payload=st.integers(0, 4096),
       kind=st.sampled_from(["npy", "mha", "nifti_gz", "h5"]))
def test_header_declared_sizes(tmp_path_factory, monkeypatch, shape, dtype, payload, kind):
    """A header may declare any shape: the readers check it against the file and the budget before reading."""
    monkeypatch.setenv("MEDINR_MEMORY_LIMIT", "256M")
    folder = tmp_path_factory.mktemp("declared")
    path = _declaring(folder, kind, tuple(shape), np.dtype(dtype), payload)
    if path is None:
        return  # the format cannot even write such a header
    start = time.perf_counter()
    _reads_cleanly(load_kspace if kind == "h5" else load_image, path)
    assert time.perf_counter() - start < 10


def _declaring(folder: Path, kind: str, shape: tuple[int, ...], dtype: np.dtype, payload: int) -> Path | None:
    import gzip

    import h5py

    if kind == "npy":
        with open(folder / "a.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": dtype.str, "fortran_order": False, "shape": shape})
            f.write(b"\0" * payload)
        return folder / "a.npy"
    if kind == "mha":
        (folder / "a.mha").write_bytes((f"ObjectType = Image\nNDims = {max(len(shape), 1)}\nDimSize = "
                                        f"{' '.join(map(str, shape)) or '1'}\nElementType = MET_FLOAT\n"
                                        "ElementDataFile = LOCAL\n").encode() + b"\0" * payload)
        return folder / "a.mha"
    if kind == "nifti_gz":
        if not 1 <= len(shape) <= 7 or max(shape, default=0) > 32767:
            return None
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_data_shape(shape)
        (folder / "a.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * (4 + payload)))
        return folder / "a.nii.gz"
    if not shape or len(shape) > 4 or math.prod(shape) == 0:
        return None
    with h5py.File(folder / "a.h5", "w") as f:  # chunked, never written
        f.create_dataset("kspace", shape=shape, dtype=np.complex64 if dtype.kind != "c" else dtype,
                         chunks=tuple(min(n, 64) for n in shape))
    return folder / "a.h5"


DATA_FILES = st.sampled_from(["data.raw", "./data.raw", "../outside/secret.raw", "{secret}", "link.raw",
                              "missing.raw", "LIST", "LIST 2", "data%03d.raw 0 2 1", "sub/data.raw", "..", "",
                              "data.raw\nspace: left", "LOCAL", "data file: {secret}"])


@FUZZ
@given(value=DATA_FILES, header=st.sampled_from(["nhdr", "nrrd", "mhd", "mha"]), allow=st.booleans(),
       spelling=st.sampled_from(["data file", "datafile", "DATA FILE", "ElementDataFile", "elementdatafile"]))
def test_external_data_references(tmp_path_factory, value, header, allow, spelling):
    """Whatever a text header names as its data, medinr never reads a file outside the header's folder, nor a
    link, and reads a file beside it only when allowed."""
    root = tmp_path_factory.mktemp("external")
    (root / "outside").mkdir()
    secret = root / "outside" / "secret.raw"
    secret.write_bytes(np.full(16, SECRET, np.float32).tobytes())
    folder = root / "in"
    folder.mkdir()
    (folder / "data.raw").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    os.symlink(secret, folder / "link.raw")
    name = value.replace("{secret}", str(secret))
    if header in ("nhdr", "nrrd"):
        key = spelling if "element" not in spelling.lower() else "data file"
        text = f"NRRD0004\ntype: float\ndimension: 2\nsizes: 4 4\nendian: little\nencoding: raw\n{key}: {name}\n\n"
    else:
        key = spelling if "element" in spelling.lower() else "ElementDataFile"
        text = f"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_FLOAT\n{key} = {name}\n"
    path = folder / f"x.{header}"
    path.write_text(text)
    with detached_data_allowed(allow):
        image = _reads_cleanly(load_image, path)
    if image is not None:
        assert not np.any(image[0] == SECRET), (value, header, allow)  # never the file outside
