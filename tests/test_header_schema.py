"""The one header schema (``medinr.schema``) and strict JSON (``medinr.jsonsafe``), and the cases of issue 20 that
belong to them: each hostile checkpoint, lattice cache or option gives exit 2 and one ``medinr: error:`` line
before anything is printed or written, within 10 s and without a 1 GB jump in memory."""

from __future__ import annotations

import json
import resource
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_files import assert_refused, entries, read_header, rewrite_metadata, write_checkpoint, write_header

from medinr import jsonsafe
from medinr.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from medinr.checkpoint import read_header as read_checkpoint_header
from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.models import build_model
from medinr.render.lattice import cache_path_for, file_sha256, load_lattice
from medinr.schema import LatticeHeader, check_layout, homogeneous
from pipelines.cli import main

GB = 1 << 30


def _nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _run(args, capsys) -> tuple[int, str, list[str], float, int]:
    """``main(args)``: exit status, stdout, stderr lines, seconds and the growth of peak memory (bytes)."""
    capsys.readouterr()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    rc = main([str(a) for a in args])
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.strip()], seconds, grown


def _refused(args, capsys, message: str, folder: Path) -> str:
    before = entries(folder)
    rc, out, err, seconds, grown = _run(args, capsys)
    line = assert_refused(rc, err, message)
    assert out == "", "a refused command printed part of its report first"
    assert entries(folder) == before and seconds < 10 and grown < GB
    return line


@pytest.fixture()
def field_checkpoint(tmp_path) -> Path:
    """A small 3D displacement field with an affine part, as registration writes it."""
    torch.manual_seed(0)
    model = build_model("siren", 3, 3, hidden=8, layers=1)
    geometry = Geometry((12, 12, 12), np.diag([2.0, 2.0, 2.0, 1.0]))
    affine = np.eye(4)
    affine[:3, 3] = [1.0, -2.0, 0.5]
    output = OutputMeaning("displacement", scale=2.0, units="mm", affine=affine.tolist())
    return save_checkpoint(tmp_path / "field.inr", ContinuousImage(model, geometry, output, "network"))


def _set_output_affine(value):
    return lambda meta: meta["output"].__setitem__("affine", value)


# -- checkpoints: issue 20 -----------------------------------------------------------------------------------
FIELD_CASES = {
    "affine_nested_900": (_set_output_affine(_nested(900)), "JSON nested 902 deep (at most 32)"),
    "affine_3x3_on_3d": (_set_output_affine(np.eye(3).tolist()), "output.affine of a 3D displacement must be a 4x4"),
    "affine_bottom_row_5550": (_set_output_affine([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [5, 5, 5, 0]]),
                               "output.affine must end with the row [0, 0, 0, 1], got [5.0, 5.0, 5.0, 0.0]"),
    "extra_nested_900": (lambda meta: meta.__setitem__("extra", {"deep": _nested(900)}), "JSON nested 902 deep"),
    "geometry_bottom_row": (lambda meta: meta["geometry"]["affine"].__setitem__(3, [0, 0, 1, 1]),
                            "geometry.affine must end with the row [0, 0, 0, 1]"),
}


@pytest.mark.parametrize("command", ["info", "render"])
@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_damaged_field_headers_are_refused_before_anything_is_printed(tmp_path, capsys, field_checkpoint, command,
                                                                      case):
    change, message = FIELD_CASES[case]
    bad = rewrite_metadata(field_checkpoint, tmp_path / "bad.inr", change)
    args = [command, bad] + (["--out", tmp_path / "s.png"] if command == "render" else [])
    _refused(args, capsys, message, tmp_path)


def test_the_good_field_checkpoint_is_accepted(tmp_path, capsys, field_checkpoint):
    """The cases above differ from a file medinr reads in one field only."""
    rc, out, err, _, _ = _run(["info", field_checkpoint], capsys)
    assert rc == 0 and not err and "frame:     network" in out and "displacement" in out
    field = load_checkpoint(field_checkpoint)
    assert field.output.affine[0][3] == 1.0


@pytest.mark.parametrize("command", ["info", "render"])
def test_a_hashgrid_header_whose_coarsest_level_exceeds_its_finest_is_refused(tmp_path, capsys, command):
    good = write_checkpoint(tmp_path / "hash.inr", family="hashgrid", levels=2, log2_table_size=8, hidden=8,
                            layers=1, base_resolution=4, max_resolution=8)
    bad = rewrite_metadata(good, tmp_path / "bad.inr", lambda m: m["model"]["config"].update(base_resolution=1000,
                                                                                               max_resolution=10))
    args = [command, bad] + (["--out", tmp_path / "s.png"] if command == "render" else [])
    _refused(args, capsys, "model option 'base_resolution' (1000) must not exceed 'max_resolution' (10)", tmp_path)


def test_model_options_with_a_coarsest_level_finer_than_the_finest_are_refused(tmp_path, capsys):
    from hostile_files import write_image

    image = write_image(tmp_path / "img.nii.gz", (12, 12, 12))
    _refused(["fit", image, "--model", "hashgrid", "--model-options", '{"base_resolution": 1000, "max_resolution": 10}',
              "--out", tmp_path / "out"], capsys, "'base_resolution' (1000) must not exceed 'max_resolution' (10)",
             tmp_path)


def test_duplicate_keys_in_the_checkpoint_json_are_refused(tmp_path, capsys):
    good = write_checkpoint(tmp_path / "good.inr")
    text = json.dumps(read_metadata(good))
    assert text.endswith("}")
    bad = rewrite_metadata(good, tmp_path / "bad.inr", text[:-1] + ', "frame": "identity"}')
    _refused(["info", bad], capsys, "is not valid JSON (the key 'frame' appears twice in one object)", tmp_path)


def test_a_tensor_named_twice_is_refused(tmp_path, capsys):
    good = write_checkpoint(tmp_path / "good.inr")
    header, data = read_header(good)
    name = next(k for k in header if k != "__metadata__")
    text = json.dumps(header)
    entry = json.dumps({name: header[name]})[1:-1]
    blob = ("{" + entry + ", " + text[1:]).encode()  # the same name again, first: the library keeps the last
    blob += b" " * ((8 - len(blob) % 8) % 8)
    bad = tmp_path / "bad.inr"
    bad.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    for command in ("info", "render"):
        args = [command, bad] + (["--out", tmp_path / "s.png"] if command == "render" else [])
        _refused(args, capsys, "appears twice in one object", tmp_path)


def test_extra_metadata_too_deep_to_read_back_is_not_written(tmp_path):
    model = build_model("siren", 2, 1, hidden=8, layers=1)
    image = ContinuousImage(model, Geometry((8, 8)), extra={"deep": _nested(40)})
    with pytest.raises(MedinrError, match="nested 42 deep .* keep extra metadata shallow"):
        save_checkpoint(tmp_path / "deep.inr", image)
    assert list(tmp_path.iterdir()) == []


# -- lattice caches ----------------------------------------------------------------------------------------
def _rewrite_cache(cache: Path, change) -> None:
    header, data = read_header(cache)
    meta = json.loads(header["__metadata__"]["medinr_lattice"])
    change(meta)
    header["__metadata__"]["medinr_lattice"] = json.dumps(meta)
    write_header(cache, header, data)


@pytest.fixture()
def cached(tmp_path, capsys) -> tuple[Path, Path]:
    """A checkpoint and its lattice cache, written by ``render --tier lattice``."""
    ck = write_checkpoint(tmp_path / "ck.inr")
    rc, _, err, _, _ = _run(["render", ck, "--tier", "lattice", "--size", "16x16", "--out", tmp_path / "a.png"],
                            capsys)
    cache = cache_path_for(ck)
    assert rc == 0 and not err and cache.is_file()
    return ck, cache


LATTICE_CASES = {
    "no_geometry": (lambda m: m.pop("geometry"), "it has no geometry"),
    "string_to_network": (lambda m: m.__setitem__("to_network", "abc"), "to_network must be a list of 3 or 4 rows"),
    "singular_to_network": (lambda m: m["to_network"][0].__setitem__(0, 0.0), "to_network is singular"),
    "to_network_bottom_row": (lambda m: m["to_network"].__setitem__(3, [5, 5, 5, 0]), "must end with the row"),
    "margin_nan_string": (lambda m: m.__setitem__("margin", ["nan", 1, 1]), "margin item must be a number"),
    "kind_complex_one_channel": (lambda m: m.__setitem__("kind", "complex"), "a complex lattice needs 2 channels"),
    "duplicate_key": ("duplicate", "the key 'kind' appears twice"),
}


@pytest.mark.parametrize("case", sorted(LATTICE_CASES))
def test_a_damaged_lattice_cache_with_the_right_hash_is_refused_and_rebuilt(tmp_path, capsys, cached, case):
    ck, cache = cached
    change, message = LATTICE_CASES[case]
    if change == "duplicate":
        header, data = read_header(cache)
        text = header["__metadata__"]["medinr_lattice"]
        header["__metadata__"]["medinr_lattice"] = text[:-1] + ', "kind": "intensity"}'
        write_header(cache, header, data)
    else:
        _rewrite_cache(cache, change)
    sha = file_sha256(ck)
    with pytest.raises(MedinrError, match=message) as refused:
        load_lattice(cache, sha)
    assert len(str(refused.value).splitlines()) == 1 and str(cache) in str(refused.value)
    # the README: such a cache is refused and rebuilt
    rc, _, err, seconds, _ = _run(["render", ck, "--tier", "lattice", "--size", "16x16", "--out", tmp_path / "b.png"],
                                  capsys)
    assert rc == 0 and not err and seconds < 10
    assert load_lattice(cache, sha).kind == "intensity"


def test_a_lattice_cache_that_cannot_be_written_is_skipped(tmp_path, capsys, monkeypatch):
    """Issue 20: a writer error (SafetensorError, e.g. a full disk) used to escape; any failure skips caching."""
    import safetensors.numpy
    from safetensors import SafetensorError

    def failing_save(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    ck = write_checkpoint(tmp_path / "ck.inr")
    rc, out, err, _, _ = _run(["render", ck, "--tier", "lattice", "--size", "16x16", "--out", tmp_path / "a.png"],
                              capsys)
    assert rc == 0 and not err and (tmp_path / "a.png").is_file() and "(lattice)" in out
    assert not cache_path_for(ck).exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_lattice_header_round_trips_through_the_schema():
    geometry = Geometry((4, 5, 6), np.diag([1.5, 2.0, 2.5, 1.0]))
    header = LatticeHeader("ab" * 32, geometry, "displacement", np.eye(4), np.array([0.1, 0.1, 0.1]), 1.5)
    back = LatticeHeader.parse(json.dumps(header.to_json()), "x.lattice")
    assert back.geometry == geometry and back.kind == "displacement" and np.array_equal(back.to_network, np.eye(4))
    assert back.values_shape(3) == (3, 4, 5, 6)
    with pytest.raises(MedinrError, match="a displacement lattice needs 3 channels, it has 1"):
        back.values_shape(1)
    with pytest.raises(MedinrError, match="checkpoint_sha256 must be 64 hex digits"):
        LatticeHeader("xyz", geometry, "intensity", np.eye(4))


# -- the schema's rules and strict JSON ----------------------------------------------------------------------
def test_the_layout_rules_live_in_one_place():
    geometry = Geometry((8, 8, 8))
    out = OutputMeaning("displacement", affine=np.eye(3).tolist())  # a 2D affine part
    with pytest.raises(MedinrError, match="output.affine of a 3D displacement must be a 4x4 matrix"):
        check_layout("network", geometry, None, out, 3, 3)
    with pytest.raises(MedinrError, match="output.affine of a 3D displacement must be a 4x4 matrix"):
        ContinuousImage(build_model("siren", 3, 3, hidden=8, layers=1), geometry, out)
    with pytest.raises(MedinrError, match="a complex output needs 2 channels, the model has 1"):
        check_layout("network", geometry, None, OutputMeaning("complex"), 3, 1)
    with pytest.raises(MedinrError, match="only for a displacement"):
        OutputMeaning("intensity", affine=np.eye(4).tolist())
    with pytest.raises(MedinrError, match="m must be a matrix of numbers"):
        homogeneous(_nested(900), "m")
    with pytest.raises(MedinrError, match=r"m must be a 3x3 or 4x4 matrix, got shape \(2, 2\)"):
        homogeneous(np.eye(2), "m")


def test_read_header_gives_the_typed_header(tmp_path, field_checkpoint):
    header = read_checkpoint_header(field_checkpoint)
    assert header.frame == "network" and header.output.kind == "displacement" and header.model.family == "siren"
    assert header.model.options() == {"hidden": 8, "layers": 1, "omega_0": 30.0, "hidden_omega": 30.0}
    assert header.geometry.shape == (12, 12, 12) and header.format_version == 2


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1, "a": 2}', "is not valid JSON (the key 'a' appears twice in one object)"),
    ("[NaN]", "is not valid JSON (NaN is not JSON"),
    ("[1e999]", "is not valid JSON (the number '1e999' is too large for a float)"),
    ("[" + "9" * 5000 + "]", "is not valid JSON (a number with too many digits)"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "JSON nested 5000 deep (at most 32)"),
    ("[1,", "is not valid JSON (Expecting value at char 3)"),
])
def test_strict_json_refuses_with_one_line(text, message):
    start = time.perf_counter()
    with pytest.raises(MedinrError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        jsonsafe.loads(text, "what")
    assert str(e.value).startswith(("what is not valid JSON (", "what: JSON nested"))
    assert len(str(e.value).splitlines()) == 1
    assert time.perf_counter() - start < 1


def test_strict_json_counts_depth_outside_strings_only():
    assert jsonsafe.nesting_depth('{"a": "[[[[{{{{", "b": [[1]]}') == 3
    assert jsonsafe.loads('{"a": "[[[[", "b": [[1]]}', "x", max_depth=3) == {"a": "[[[[", "b": [[1]]}


def test_model_options_nested_5000_deep_are_refused_with_one_line(tmp_path, capsys):
    from hostile_files import write_image

    image = write_image(tmp_path / "img.nii.gz", (12, 12))
    deep = '{"a": ' * 5000 + "1" + "}" * 5000
    _refused(["fit", image, "--model-options", deep, "--out", tmp_path / "out"], capsys, "nested 5000 deep", tmp_path)


def test_the_readme_checkpoint_snippet_includes_the_affine_part(field_checkpoint):
    """README "Checkpoints": values at every voxel centre through ContinuousImage.evaluate are the full displacement
    (the affine part included); the raw network with to_output_units, the former snippet, misses it."""
    image = load_checkpoint(field_checkpoint)
    world = image.geometry.world_grid(dtype=torch.float64)  # (*shape, ndim) mm at every voxel centre
    values = image.evaluate(world)  # output units; a displacement's affine part included
    assert values.shape == (12, 12, 12, 3)
    assert np.allclose(values.numpy(), image.on_grid(), atol=1e-5)
    network_only = image.to_output_units(image.model.evaluate(image.geometry.network_grid()))
    assert np.allclose((values - network_only).numpy(), [1.0, -2.0, 0.5], atol=1e-5)  # M x - x: the translation
