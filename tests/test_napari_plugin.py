"""The napari plugin under a real viewer: run with ``xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("qtpy")
pytest.importorskip("npe2")

from medinr.checkpoint import save_checkpoint  # noqa: E402
from medinr.continuous import ContinuousImage
from medinr.geometry import Geometry, WorldBox  # noqa: E402
from medinr.models import build_model  # noqa: E402
from medinr.render import render_plane  # noqa: E402

pytestmark = pytest.mark.napari

MANIFEST = Path(__file__).resolve().parents[1] / "napari_plugin" / "napari.yaml"


@pytest.fixture(autouse=True)
def medinr_plugin():
    """Register the manifest when the package is not pip-installed (no entry point) so napari finds it."""
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    try:
        pm.get_manifest("medinr")
    except KeyError:
        pm.register(PluginManifest.from_file(str(MANIFEST)))
    yield


@pytest.fixture(scope="module")
def intensity_file(tmp_path_factory) -> Path:
    """A small untrained SIREN on a 2 mm grid: structured values, cheap to evaluate."""
    import torch

    torch.manual_seed(0)
    model = build_model("siren", 3, 1, hidden=32, layers=2, omega_0=10.0)
    geom = Geometry(
        (24, 28, 20), np.diag([-2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, 20], [0, 0, 0, -30], [0, 0, 0, 5], [0] * 4])
    )
    ckpt = ContinuousImage(model, geom, {"kind": "intensity", "scale": 100.0, "offset": 50.0})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "brain.inr", ckpt)


def test_manifest_validates():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reader_opens_a_checkpoint_and_refuses_others(intensity_file, tmp_path):
    from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY
    from napari_plugin._reader import get_reader

    assert get_reader(str(tmp_path / "scan.nii.gz")) is None
    reader = get_reader(str(intensity_file))
    ((data, meta, kind),) = reader(str(intensity_file))
    assert kind == "image" and data.shape == (24, 28, 20)
    assert np.allclose(meta["affine"], meta["metadata"][AFFINE_KEY]) and meta["metadata"][CHECKPOINT_KEY] is not None
    damaged = tmp_path / "bad.inr"
    damaged.write_bytes(b"not a checkpoint")
    from medinr.errors import MedinrError

    with pytest.raises(MedinrError, match="not a medinr checkpoint"):
        get_reader(str(damaged))(str(damaged))


def test_registration_checkpoint_gives_magnitude_and_jacobian_layers(tmp_path):
    import torch

    from napari_plugin._reader import read_checkpoints

    torch.manual_seed(1)
    geom = Geometry((16, 16, 16), np.diag([2.0, 2.0, 2.0, 1.0]))
    box = geom.world_box()
    model = build_model("siren", 3, 3, hidden=16, layers=2, omega_0=5.0)
    ckpt = ContinuousImage(
        model, geom, {"kind": "displacement", "scale": 1.0}, frame="world_box", world_box=WorldBox(box.lo, box.hi)
    )
    path = save_checkpoint(tmp_path / "reg.inr", ckpt)
    layers = read_checkpoints(str(path))
    assert [m["name"] for _, m, _ in layers] == ["reg |u| mm", "reg det J"]
    assert np.all(layers[0][0] >= 0) and np.isfinite(layers[1][0]).all()


needs_display = pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"),
    reason="needs a display: run under xvfb-run -a -s '-screen 0 1280x1024x24'",
)


def _wait_renders(qtbot, widget, count: int) -> None:
    qtbot.waitUntil(lambda: widget.render_count >= count, timeout=30000)


@needs_display
def test_widget_renders_oblique_planes_and_follows_the_camera(make_napari_viewer, qtbot, intensity_file, tmp_path):
    from napari_plugin._widget import SLICE_LAYER, SliceWidget
    from napari_plugin._writer import write_nifti

    viewer = make_napari_viewer(show=True)
    viewer.open(str(intensity_file), plugin="medinr")
    widget = SliceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.normal.setText("1,1,2")
    widget.normal.editingFinished.emit()
    widget.tilt_col.setValue(15.0)
    n = widget.render_count
    _wait_renders(qtbot, widget, n + 1)
    qtbot.wait(300)  # let any render queued by the last control change finish too
    ckpt = widget._ckpt
    req = widget.last_request
    layer = viewer.layers[SLICE_LAYER]
    assert abs(req.plane.normal @ np.array([1, 1, 2]) / np.sqrt(6)) < 0.999  # tilted away from the normal
    assert layer.data.shape == req.shape and req.shape == widget.canvas_size()
    assert np.allclose(layer.data, render_plane(ckpt, req.plane, req.shape), atol=1e-4)

    # zoom in: a new render of the visible region at the new resolution (finer than the 2 mm training grid)
    count, old = widget.render_count, req
    widget.camera.zoom = widget.camera.zoom * 4
    _wait_renders(qtbot, widget, count + 1)
    qtbot.wait(200)
    new = widget.last_request
    assert np.allclose(np.asarray(new.scale) * 4, old.scale, rtol=1e-6) and new.shape == old.shape
    assert new.scale[0] < 2.0
    assert np.allclose(layer.data, render_plane(ckpt, new.plane, new.shape), atol=1e-4)

    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape[-1] in (3, 4) and shot[..., :3].std() > 5, "screenshot is blank"

    # the writer puts every pixel of the current slice at its world position
    import nibabel as nib

    out = write_nifti(str(tmp_path / "slice.nii.gz"), layer.data, {"metadata": layer.metadata})
    img = nib.load(out[0])
    h, w = new.shape
    rc = np.stack(np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij"), -1)
    world = rc[..., 0, None] * img.affine[:3, 0] + rc[..., 1, None] * img.affine[:3, 1] + img.affine[:3, 3]
    assert np.allclose(world, new.plane.world_points(new.shape), atol=1e-4)

    # the 3D view shows the slice as a tilted plane
    count = widget.render_count
    viewer.dims.ndisplay = 3
    _wait_renders(qtbot, widget, count + 1)
    from napari_plugin._widget import CONTEXT_LAYER

    ctx = viewer.layers[CONTEXT_LAYER]
    assert ctx.data.shape[0] == 1 and ctx.visible and not layer.visible


def test_sample_data_contribution_is_declared():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(str(MANIFEST))
    assert [s.key for s in manifest.contributions.sample_data] == ["mni152_t1_inr"]
    assert manifest.contributions.readers[0].filename_patterns == ["*.inr"]


def test_sample_data_is_fitted_once_then_cached(monkeypatch, tmp_path):
    from napari_plugin import _sample_data

    monkeypatch.setenv("MEDINR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_sample_data, "SHIPPED", tmp_path / "not_shipped.inr")
    from napari_plugin import _layers

    monkeypatch.setattr(_sample_data, "SAMPLE_STEPS", 3)  # the real sample fits 300 steps; the plumbing is tested
    monkeypatch.setattr(_layers, "VOLUME_VOXELS", 1 << 14)
    ((data, meta, kind),) = _sample_data.make_sample_data()
    path = tmp_path / "cache" / _sample_data.SAMPLE_NAME
    assert kind == "image" and data.ndim == 3 and path.is_file() and path.stat().st_size < 2_000_000
    stamp = path.stat().st_mtime_ns
    _sample_data.make_sample_data()
    assert path.stat().st_mtime_ns == stamp


def test_shipped_sample_matches_the_scan():
    from medinr.checkpoint import load_checkpoint
    from medinr.io import load_image
    from medinr.metrics import psnr
    from medinr.render import evaluate_world
    from napari_plugin._sample_data import SHIPPED, sample_scan

    if not SHIPPED.is_file():
        pytest.skip("no shipped sample checkpoint (it is fitted on first use)")
    assert SHIPPED.stat().st_size < 1_000_000
    ckpt = load_checkpoint(SHIPPED)
    image, geom = load_image(sample_scan())
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, s, 20000) for s in geom.shape], -1)
    values = evaluate_world(ckpt, geom.voxel_to_world(idx.astype(np.float64)))[:, 0]
    truth = image[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert psnr(truth, values) > 30.0
