"""The napari plugin: manifest, readers and writer (no viewer needed), then the slicer in a real viewer.

Run the viewer tests with ``xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest`` (they are skipped
without a display).
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

napari = pytest.importorskip("napari")
pytest.importorskip("qtpy")
pytest.importorskip("npe2")

from viewer_helpers import (  # noqa: E402
    GEOM,
    MANIFEST,
    intensity_file,
    medinr_plugin,
    needs_display,
    not_blank,
    registration_file,
    viewer_with_slicer,
    wait_exact,
)

from medinr.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from medinr.continuous import ContinuousImage  # noqa: E402
from medinr.errors import MedinrError  # noqa: E402
from medinr.geometry import Geometry  # noqa: E402
from medinr.io import save_image  # noqa: E402
from medinr.models import build_model  # noqa: E402

__all__ = ["intensity_file", "medinr_plugin", "registration_file"]  # fixtures, re-exported for pytest
pytestmark = pytest.mark.napari


# -- without a viewer -----------------------------------------------------------------------------------------
def test_manifest_validates():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_entry_resolves_and_routes_its_files():
    """Each command names an importable callable; each reader takes what its patterns claim and nothing else."""
    import yaml

    raw = yaml.safe_load(MANIFEST.read_text())  # re-read from the file, not from the plugin's own constants
    commands = {}
    for cmd in raw["contributions"]["commands"]:
        module, name = cmd["python_name"].split(":")
        commands[cmd["id"]] = getattr(importlib.import_module(module), name)
        assert callable(commands[cmd["id"]])
    claimed = {"x.inr", "x.nii", "x.nii.gz"}
    for reader in raw["contributions"]["readers"]:
        get = commands[reader["command"]]
        mine = {f"x{p.removeprefix('*')}" for p in reader["filename_patterns"]}
        assert mine <= claimed
        for name in claimed | {"x.png"}:
            assert (get(name) is not None) == (name in mine), (reader["command"], name)
    writer = raw["contributions"]["writers"][0]
    for ext in writer["filename_extensions"]:
        assert ext in (".nii", ".nii.gz")
    assert raw["contributions"]["sample_data"][0]["command"] in commands


def test_reader_opens_a_checkpoint_as_its_lattice_and_refuses_damaged_files(intensity_file, tmp_path):
    from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY
    from napari_plugin._reader import get_reader, read_checkpoints

    ((data, meta, kind),) = get_reader(str(intensity_file))(str(intensity_file))
    image = meta["metadata"][CHECKPOINT_KEY]
    lattice_geom = Geometry(data.shape, meta["metadata"][AFFINE_KEY])
    # never coarser than the training grid (at least as fine on every axis), over the same box
    assert kind == "image" and all(n >= m for n, m in zip(data.shape, GEOM.shape))
    assert np.allclose(lattice_geom.world_box().lo, GEOM.world_box().lo) and np.allclose(
        meta["affine"], lattice_geom.affine
    )
    # the layer's values are the network's at the lattice points
    idx = np.array([[0, 0, 0], [5, 7, 3], [d - 1 for d in data.shape]], dtype=float)
    values = image.sample(lattice_geom.voxel_to_world(idx), outside=None)[:, 0]
    assert np.allclose(data[tuple(idx.astype(int).T)], values, atol=1e-4)
    assert (intensity_file.parent / "brain.inr.lattice").is_file()  # the cache for the next opening
    damaged = tmp_path / "bad.inr"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(MedinrError, match="not a medinr checkpoint"):
        read_checkpoints(str(damaged))
    # through napari, the same line is shown (an error notification) and no layer is added
    assert get_reader(str(damaged))(str(damaged)) == [(None,)]


def test_registration_checkpoint_opens_as_its_displacement_magnitude(registration_file):
    from napari_plugin._layers import AFFINE_KEY, CHECKPOINT_KEY
    from napari_plugin._reader import read_checkpoints

    ((data, meta, _),) = read_checkpoints(str(registration_file))
    assert meta["name"] == "reg |u| mm" and meta["colormap"] == "magma"
    field = meta["metadata"][CHECKPOINT_KEY]
    geom = Geometry(data.shape, meta["metadata"][AFFINE_KEY])
    world = geom.world_grid(dtype=torch.float64).numpy()[::5, ::5, ::5]
    assert np.allclose(data[::5, ::5, ::5], np.linalg.norm(field.sample(world, outside=None), axis=-1), atol=1e-4)


def test_nifti_round_trip_through_the_plugin_reader_and_writer(tmp_path):
    from napari_plugin._reader import get_nifti_reader
    from napari_plugin._writer import write_nifti

    rng = np.random.default_rng(0)
    affine = np.array([[0.0, -1.2, 0.1, 40.0], [2.0, 0.0, 0.0, -60.0], [0.0, 0.1, 3.0, 10.0], [0, 0, 0, 1]])
    volume = rng.random((9, 7, 5)).astype(np.float32)
    src = save_image(tmp_path / "recon.nii.gz", volume, Geometry(volume.shape, affine))
    ((data, meta, kind),) = get_nifti_reader(str(src))(str(src))
    assert kind == "image" and np.array_equal(data, volume) and np.allclose(meta["affine"], affine)
    out = write_nifti(str(tmp_path / "again.nii.gz"), data, meta)
    ((back, meta2, _),) = get_nifti_reader(out[0])(out[0])
    assert np.array_equal(back, volume) and np.allclose(meta2["affine"], affine)
    # a vector image (a displacement field as the pipelines write it) opens as one layer per component
    field = rng.random((9, 7, 5, 3)).astype(np.float32)
    vec = save_image(tmp_path / "displacement.nii.gz", field, Geometry(field.shape[:3], affine))
    ((vdata, vmeta, _),) = get_nifti_reader(str(vec))(str(vec))
    assert vmeta["channel_axis"] == 3 and len(vmeta["name"]) == 3 and np.allclose(vdata, field)


# -- in a real viewer -----------------------------------------------------------------------------------------
@needs_display
def test_slicer_draws_cached_then_exact_frames_in_mm(make_napari_viewer, qtbot, intensity_file, tmp_path):
    from medinr.render import render_plane
    from napari_plugin._layer_book import SLICE_LAYER
    from napari_plugin._writer import write_nifti

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    widget.normal.setText("1,1,2")
    widget.normal.editingFinished.emit()
    widget.tilt_col.setValue(15.0)
    wait_exact(qtbot, widget, 1)
    qtbot.wait(300)
    wait_exact(qtbot, widget, widget.model.exact_count)
    # no second copy of the checkpoint under the slice and no leftover dims slider
    assert [lyr.name for lyr in viewer.layers] == [SLICE_LAYER] and viewer.dims.ndim == 2
    layer, shown = viewer.layers[SLICE_LAYER], widget.model.shown
    assert shown.tier == "exact" and "exact" in widget.tier.text() and widget.model.fast_count >= 1
    # the visible part of the plane, one rendered pixel per screen pixel
    assert layer.data.shape == shown.request.shape and max(shown.request.shape) <= max(widget.canvas_size())
    assert shown.request.scale[0] == pytest.approx(1 / widget.camera.zoom)
    assert np.allclose(
        layer.data, render_plane(widget.model.image, shown.request.plane, shown.request.shape), atol=1e-4
    )
    assert [str(u) for u in layer.units] == ["millimeter"] * 2 and not_blank(viewer)

    # the camera zoom moves the zoom box; the new view is drawn cached first, then exactly, finer than 2 mm
    fast, exact, box = widget.model.fast_count, widget.model.exact_count, widget.zoom.value()
    widget.camera.zoom = widget.camera.zoom * 4
    wait_exact(qtbot, widget, exact + 1)
    assert widget.zoom.value() == pytest.approx(4 * box, abs=0.03) and widget.model.fast_count > fast
    req = widget.model.shown.request
    assert np.allclose(np.asarray(req.scale) * 4, shown.request.scale, rtol=1e-6) and req.scale[0] < 2.0

    # the cursor reads RAS millimetres and the value under it
    r, c = 17, 23
    viewer.cursor.position = (req.translate[0] + r * req.scale[0], req.translate[1] + c * req.scale[1])
    ras = req.plane.world_points(req.shape)[r, c]
    assert widget.cursor.text().startswith("RAS (" + ", ".join(f"{v:.1f}" for v in ras) + ") mm")
    assert f"{layer.data[r, c]:.4g}" in widget.cursor.text()

    # the writer puts every pixel of the current slice at its world position
    import nibabel as nib

    out = write_nifti(str(tmp_path / "slice.nii.gz"), layer.data, {"metadata": layer.metadata})
    img = nib.load(out[0])
    rc = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in req.shape], indexing="ij"), -1)
    world = rc[..., 0, None] * img.affine[:3, 0] + rc[..., 1, None] * img.affine[:3, 1] + img.affine[:3, 3]
    assert np.allclose(world, req.plane.world_points(req.shape), atol=1e-4)


@needs_display
def test_zooming_past_the_lattice_spacing_triggers_an_exact_render(
    make_napari_viewer, qtbot, intensity_file, monkeypatch
):
    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    widget.renderer.policy.idle_s = 600.0  # no idle refinement: only the zoom may ask for the network
    qtbot.waitUntil(lambda: widget.model.lattice is not None and widget.model.shown is not None, timeout=60000)
    spacing = widget.model.lattice.spacing_mm
    # zoomed out until a screen pixel covers more than a lattice step: the lattice holds the view
    widget.camera.zoom = 0.5 / spacing
    qtbot.waitUntil(lambda: widget.model.shown.request.scale[0] > spacing, timeout=30000)
    exact = widget.model.exact_count
    qtbot.wait(1000)
    assert widget.model.shown.tier == "lattice" and widget.model.exact_count == exact
    # zoomed in past the lattice step: the network itself is asked for the detail
    widget.camera.zoom = 4.0 / spacing
    wait_exact(qtbot, widget, exact + 1)
    assert widget.model.shown.tier == "exact" and widget.model.shown.request.scale[0] < spacing


@needs_display
def test_3d_2d_3d_round_trip_shows_volume_and_plane(make_napari_viewer, qtbot, intensity_file):
    from napari_plugin._layer_book import CONTEXT_LAYER, SLICE_LAYER, VOLUME_LAYER

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    widget.tilt_row.setValue(20.0)
    wait_exact(qtbot, widget, 1)
    for _ in range(2):
        viewer.dims.ndisplay = 3
        qtbot.waitUntil(lambda: CONTEXT_LAYER in viewer.layers, timeout=30000)
        assert sorted(lyr.name for lyr in viewer.layers) == sorted([VOLUME_LAYER, CONTEXT_LAYER])
        assert viewer.layers[VOLUME_LAYER].rendering == "attenuated_mip" and not_blank(viewer)
        # the current plane in place: napari's plane of the lattice, through the slice centre along its normal
        plane, base = viewer.layers[CONTEXT_LAYER], widget.model.base_plane()
        affine = viewer.layers[CONTEXT_LAYER].affine.affine_matrix
        centre = affine[:3, :3] @ np.asarray(plane.plane.position) + affine[:3, 3]
        normal = np.linalg.inv(affine[:3, :3]).T @ np.asarray(plane.plane.normal)
        assert (
            np.allclose(centre, base.centre, atol=1e-6)
            and abs(normal @ base.normal) / np.linalg.norm(normal) > 0.999999
        )
        # dragging the plane in the canvas moves it along its normal: the offset box follows
        offset = widget.offset.value()
        plane.plane.position = tuple(np.asarray(plane.plane.position) + 2.0 * np.asarray(plane.plane.normal))
        moved = np.linalg.norm(affine[:3, :3] @ (2.0 * np.asarray(plane.plane.normal)))
        assert widget.offset.value() == pytest.approx(offset + moved, abs=0.01)
        count = widget.model.fast_count + widget.model.exact_count
        viewer.dims.ndisplay = 2  # raised a LinAlgError from a hidden tilted layer before
        qtbot.waitUntil(lambda n=count: widget.model.fast_count + widget.model.exact_count > n, timeout=60000)
        assert [lyr.name for lyr in viewer.layers] == [SLICE_LAYER]
        # the frame is counted when its data reaches the layer; the canvas repaints on the next event-loop turn
        qtbot.waitUntil(lambda: not_blank(viewer), timeout=10000)
        assert viewer.layers[SLICE_LAYER].contrast_limits[1] > 1.0  # the intensity's own range, not napari's 0..1
    assert widget.last_error is None


@needs_display
def test_contrast_and_colormap_follow_the_shown_quantity(make_napari_viewer, qtbot, registration_file):
    from medinr.registration.jacobian import jacobian_determinant
    from napari_plugin._layer_book import SLICE_LAYER

    viewer, widget = viewer_with_slicer(make_napari_viewer, registration_file)
    wait_exact(qtbot, widget, 1)
    layer, field = viewer.layers[SLICE_LAYER], widget.model.image
    assert layer.colormap.name == "magma" and layer.contrast_limits[0] >= 0
    seen = {}
    for name in ("jacobian", "0"):
        exact = widget.model.exact_count
        widget.component.setCurrentText(name)
        wait_exact(qtbot, widget, exact + 1)
        seen[name] = (layer.colormap.name, tuple(layer.contrast_limits))
    # limits centred on the neutral value and as wide as the quantity varies (not the intensity's 0..max)
    world = field.geometry.world_grid(dtype=torch.float64).numpy()[::3, ::3, ::3]
    spread = np.abs(jacobian_determinant(field, world) - 1).max()
    lo, hi = seen["jacobian"][1]
    assert seen["jacobian"][0] == "PiYG" and abs((lo + hi) / 2 - 1) < 1e-6 and 0.2 * spread < hi - 1 < 2 * spread
    spread = np.abs(field.sample(world, outside=None)[..., 0]).max()
    lo, hi = seen["0"][1]
    assert seen["0"][0] == "bwr" and abs(lo + hi) < 1e-6 and 0.2 * spread < hi < 2 * spread


@needs_display
def test_closing_the_viewer_while_rendering_leaves_no_thread_behind(make_napari_viewer, qtbot, tmp_path, recwarn):
    import threading

    torch.manual_seed(0)
    slow = ContinuousImage(build_model("siren", 3, 1, hidden=192, layers=3), GEOM)
    path = save_checkpoint(tmp_path / "slow.inr", slow)
    errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        viewer, widget = viewer_with_slicer(make_napari_viewer, path)
        widget.camera.zoom = widget.camera.zoom * 3
        qtbot.waitUntil(lambda: any(w.is_running for w, _, _ in widget.renderer.workers.active), timeout=30000)
        workers = [w for w, _, _ in widget.renderer.workers.active]
        viewer.close()  # while the exact frame (seconds of network time) is being computed
        assert not any(w.is_running for w in workers)  # closing waited for them to leave the network
        qtbot.wait(500)
    finally:
        threading.excepthook = old_hook
    assert not errors and not [w for w in recwarn if "aborted thread" in str(w.message)]


def test_quitting_the_application_stops_the_lattice_builds(qtbot, tmp_path):
    """A background lattice build is hooked to the application's aboutToQuit and stops there (within one slab),
    writing no cache file, instead of being aborted mid-network when the event loop ends."""
    from qtpy.QtWidgets import QApplication

    from napari_plugin import _lattices

    torch.manual_seed(0)
    slow = ContinuousImage(build_model("siren", 3, 1, hidden=192, layers=3), GEOM)
    path = save_checkpoint(tmp_path / "slow.inr", slow)
    image = load_checkpoint(path)
    big = Geometry((160, 160, 160), np.diag([1.0, 1.0, 1.0, 1.0]))  # tens of seconds of network time
    _lattices.ensure(image, str(path), big)
    entry = _lattices._ENTRIES[image]
    qtbot.waitUntil(lambda: entry.worker is not None and entry.worker.is_running, timeout=10000)
    app = QApplication.instance()
    assert app in _lattices._QUIT_HOOK and app.receivers(app.aboutToQuit) >= 1
    _lattices.stop_all()
    assert entry.done.is_set() and entry.worker is None and not _lattices.is_final(image)
    assert not _lattices.cache_file(str(path)).exists()


@needs_display
def test_shift_and_ctrl_drag_move_and_tilt_the_plane(make_napari_viewer, qtbot, intensity_file):
    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)

    class Drag:
        def __init__(self, modifiers):
            self.modifiers, self.pos, self.type = modifiers, (100.0, 100.0), "mouse_press"

    for mods, moved in ((["Shift"], "offset"), (["Control"], "tilt")):
        event = Drag(mods)
        before = (widget.offset.value(), widget.tilt_col.value(), widget.tilt_row.value())
        steps = widget.canvas.on_drag(viewer, event)
        next(steps)
        event.type, event.pos = "mouse_move", (120.0, 60.0)
        next(steps)
        event.type = "mouse_release"
        with pytest.raises(StopIteration):
            next(steps)
        after = (widget.offset.value(), widget.tilt_col.value(), widget.tilt_row.value())
        if moved == "offset":
            assert after[0] == pytest.approx(before[0] + 40 * 0.25) and after[1:] == before[1:]
        else:
            assert (
                after[0] == before[0]
                and after[1] == pytest.approx(before[1] - 10)
                and after[2] == pytest.approx(before[2] + 5)
            )
    assert widget.camera.mouse_pan


def test_shipped_sample_is_package_data_that_loads():
    from napari_plugin._sample_data import SHIPPED

    assert SHIPPED.is_file() and SHIPPED.stat().st_size < 8_000_000
    image = load_checkpoint(SHIPPED)
    assert image.kind == "intensity" and image.extra.get("derivation") == "napari_plugin/derive_sample.py"
