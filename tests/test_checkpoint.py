"""Checkpoints: exact round trips, and files that are not ours (pickles, bad JSON, truncation) are refused."""

import json
import pickle
import struct

import numpy as np
import pytest
import torch

from medinr.checkpoint import FORMAT_VERSION, load_checkpoint, read_header, read_metadata, save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.models import build_model


@pytest.fixture()
def ckpt() -> ContinuousImage:
    torch.manual_seed(0)
    model = build_model("siren", 3, 1, hidden=32, layers=2)
    geo = Geometry((5, 6, 7), np.diag([1.5, 1.5, 3.0, 1.0]))
    return ContinuousImage(model, geo, {"kind": "intensity", "scale": 2.5, "offset": 1.0}, extra={"note": "test"})


def test_round_trip_reproduces_outputs_exactly(tmp_path, ckpt):
    path = save_checkpoint(tmp_path / "m.inr", ckpt)
    back = load_checkpoint(path)
    x = torch.rand(100, 3) * 2 - 1
    assert torch.equal(back.model(x), ckpt.model.eval()(x))
    assert back.geometry == ckpt.geometry
    assert back.output.scale == 2.5 and back.extra == {"note": "test"}
    assert torch.allclose(back.to_output_units(torch.ones(1)), torch.tensor([3.5]))


def test_world_box_coordinates(tmp_path, ckpt):
    ckpt.frame, ckpt.world_box = "world_box", WorldBox(np.array([-10.0, -10, -10]), np.array([10.0, 10, 10]))
    back = load_checkpoint(save_checkpoint(tmp_path / "w.inr", ckpt))
    assert torch.allclose(back.to_network(torch.tensor([[10.0, 0.0, -10.0]])), torch.tensor([[1.0, 0.0, -1.0]]))


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.inr"
    with open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(MedinrError, match="not a medinr checkpoint"):
        load_checkpoint(path)
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.inr")
    with pytest.raises(MedinrError, match="not a medinr checkpoint"):
        load_checkpoint(tmp_path / "torch.inr")
    assert not marker.exists()


def _rewrite_metadata(src, dst, text: str) -> None:
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["medinr"] = text
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_bad_json_and_foreign_metadata_are_refused(tmp_path, ckpt):
    good = save_checkpoint(tmp_path / "m.inr", ckpt)
    _rewrite_metadata(good, tmp_path / "bad.inr", '{"format": "medinr-inr", "model": ')
    with pytest.raises(MedinrError, match="not valid JSON"):
        load_checkpoint(tmp_path / "bad.inr")
    _rewrite_metadata(good, tmp_path / "foreign.inr", '{"format": "other"}')
    with pytest.raises(MedinrError, match="format tag"):
        read_metadata(tmp_path / "foreign.inr")
    meta = read_metadata(good)
    meta["model"]["config"]["hidden"] = 64  # weights no longer fit the config
    _rewrite_metadata(good, tmp_path / "mismatch.inr", json.dumps(meta))
    with pytest.raises(MedinrError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.inr")


def test_truncated_and_missing_files(tmp_path, ckpt):
    good = save_checkpoint(tmp_path / "m.inr", ckpt)
    (tmp_path / "trunc.inr").write_bytes(good.read_bytes()[:200])
    with pytest.raises(MedinrError):
        load_checkpoint(tmp_path / "trunc.inr")
    with pytest.raises(MedinrError, match="not found"):
        load_checkpoint(tmp_path / "nothing.inr")


@pytest.mark.parametrize(("name", "family"), [("mni152_t1_2mm_hashgrid_v1.inr", "hashgrid"),
                                              ("mni152_t1_2mm_v2.inr", "mrgrid")])
def test_the_shipped_format_1_samples_pass_the_schema(samples, name, family):
    """Backward compatibility: format 1 (the frame written as ``coords``, ``output.channels``) still loads."""
    path = samples.parent / "napari_plugin" / "data" / name
    header = read_header(path)
    assert header.format_version == 1 and header.frame == "network" and header.geometry.shape == (98, 116, 94)
    meta = read_metadata(path)  # as format 2 would write it
    assert meta["frame"] == "network" and "coords" not in meta and meta["format_version"] == FORMAT_VERSION == 2
    assert load_checkpoint(path).model.family == family


def test_the_frame_is_written_as_frame_and_coords_is_read_as_its_alias(tmp_path, ckpt):
    good = save_checkpoint(tmp_path / "m.inr", ckpt)
    meta = read_metadata(good)
    assert meta["frame"] == "network" and "coords" not in meta
    meta["coords"] = meta.pop("frame")
    _rewrite_metadata(good, tmp_path / "old.inr", json.dumps(meta))
    assert load_checkpoint(tmp_path / "old.inr").frame == "network"
    meta["frame"] = "identity"  # both names, disagreeing
    _rewrite_metadata(good, tmp_path / "both.inr", json.dumps(meta))
    with pytest.raises(MedinrError, match="frame 'identity' and its format-1 name coords 'network' disagree"):
        read_metadata(tmp_path / "both.inr")


def test_missing_optional_fields_get_their_defaults(tmp_path, ckpt):
    good = save_checkpoint(tmp_path / "m.inr", ckpt)
    meta = read_metadata(good)
    for key in ("output", "frame", "extra", "world_box", "medinr_version"):
        meta.pop(key)
    _rewrite_metadata(good, tmp_path / "lean.inr", json.dumps(meta))
    back = load_checkpoint(tmp_path / "lean.inr")
    assert back.frame == "network" and back.output.kind == "intensity" and back.extra == {}


def test_weight_shapes_are_compared_with_the_config_before_any_is_read(tmp_path, ckpt):
    good = save_checkpoint(tmp_path / "m.inr", ckpt)
    raw = good.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [1, header[name]["shape"][0] * (header[name]["shape"][1] if len(header[name]["shape"]) > 1
                                                            else 1)]
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    (tmp_path / "shape.inr").write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    with pytest.raises(MedinrError, match=f"tensor '{name}': file"):
        load_checkpoint(tmp_path / "shape.inr")


def test_a_model_beyond_the_memory_budget_is_refused_before_its_weights_exist(tmp_path, ckpt, monkeypatch):
    good = save_checkpoint(tmp_path / "m.inr", ckpt)
    meta = read_metadata(good)
    meta["model"]["config"]["hidden"] = 20000  # in range, but 400M weights
    _rewrite_metadata(good, tmp_path / "wide.inr", json.dumps(meta))
    monkeypatch.setenv("MEDINR_MEMORY_LIMIT", "256M")
    with pytest.raises(MedinrError, match="the weights of model 'siren' would need more than 64.0 MiB"):
        load_checkpoint(tmp_path / "wide.inr")
