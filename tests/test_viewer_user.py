"""The slicer driven as a user drives it (issue 19): typed text, combo boxes, spin boxes, clicks and drops.

Every test here failed on the viewer before the split into a model and Qt views: the state bugs (an invalid normal
locking the controls, a second checkpoint bringing the first back, a grid outliving its checkpoint, a stale
cursor read-out), then what a radiologist expects (orientation labels and a stated convention, window/level,
one error line, no reader dialog, linked views with a crosshair). Run under
``xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest tests/test_viewer_user.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from viewer_helpers import (  # noqa: E402
    GEOM,
    enter_text,
    intensity_file,
    medinr_plugin,
    needs_display,
    not_blank,
    notifications,
    registration_file,
    settle,
    viewer_with_slicer,
    wait_exact,
)

__all__ = ["intensity_file", "medinr_plugin", "registration_file"]  # fixtures, re-exported for pytest
pytestmark = [pytest.mark.napari, needs_display]


def _shown_normal(widget) -> np.ndarray:
    return widget.model.shown.request.plane.normal


def _offset_of_shown(widget) -> float:
    """Distance (mm) of the plane on screen from the centre of the fitted box, along its normal."""
    lo, hi = widget.model.image.bounds()
    plane = widget.model.shown.request.plane
    return float((plane.centre - (lo + hi) / 2) @ plane.normal)


def _layer_names(viewer) -> list[str]:
    return [lyr.name for lyr in viewer.layers]


# -- state bugs ------------------------------------------------------------------------------------------------
def test_an_invalid_normal_leaves_every_control_working(make_napari_viewer, qtbot, intensity_file):
    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    enter_text(qtbot, widget.normal, "0,0,0")
    assert "error" in widget.status.text() and "normal" in widget.status.text()
    assert abs(_shown_normal(widget) @ (0, 0, 1)) > 0.999  # the canvas still shows the axial plane

    count = widget.model.exact_count
    enter_text(qtbot, widget.normal, "1,0,0")  # fixing the text shows that plane
    wait_exact(qtbot, widget, count + 1)
    assert abs(_shown_normal(widget) @ (1, 0, 0)) > 0.999 and "error" not in widget.status.text()

    enter_text(qtbot, widget.normal, "0,0,0")  # invalid again: the preset, the offset and the camera still work
    widget.preset.setCurrentText("coronal")
    widget.offset.setValue(12.0)
    qtbot.waitUntil(
        lambda: widget.idle() and abs(_shown_normal(widget) @ (0, 1, 0)) > 0.999
        and abs(_offset_of_shown(widget) - 12.0) < 1e-6,
        timeout=60000,
    )
    assert "error" not in widget.status.text()
    count = widget.model.fast_count + widget.model.exact_count
    widget.camera.center = (widget.camera.center[0], widget.camera.center[1] + 5.0, widget.camera.center[2])
    qtbot.waitUntil(lambda: widget.model.fast_count + widget.model.exact_count > count, timeout=60000)
    assert abs(_offset_of_shown(widget) - 12.0) < 1e-6 and widget.last_error is None


def test_opening_a_second_checkpoint_keeps_the_first_set_aside(
    make_napari_viewer, qtbot, intensity_file, registration_file
):
    from napari_plugin._layer_book import SLICE_LAYER

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    first = widget.model.image
    viewer.open(str(registration_file), plugin="medinr")
    qtbot.waitUntil(lambda: widget.model.image is not first and widget.model.image is not None, timeout=30000)
    wait_exact(qtbot, widget, widget.model.exact_count + 1)
    assert widget.model.image.kind == "displacement"
    # no checkpoint volume on top of the slice, and no dims slider
    assert _layer_names(viewer) == [SLICE_LAYER] and viewer.dims.ndim == 2
    # both checkpoints stay on offer; going back shows the first, still alone
    names = [widget.source.itemText(i) for i in range(widget.source.count())]
    assert len(names) == 2
    widget.source.setCurrentText(next(n for n in names if n.startswith("brain")))
    qtbot.waitUntil(lambda: widget.model.image is first, timeout=30000)
    wait_exact(qtbot, widget, widget.model.exact_count + 1)
    assert _layer_names(viewer) == [SLICE_LAYER] and viewer.dims.ndim == 2
    # closing the slicer gives both checkpoints back, in the order they were opened
    widget.shutdown()
    assert _layer_names(viewer) == names and all(lyr.metadata.get("medinr_checkpoint") for lyr in viewer.layers)
    # a label update the widget deferred (a 1 ms timer) may still fire after the shutdown took its overlays: a no-op
    widget.canvas.update_labels()
    assert not widget.canvas._warm_up.isActive()


def test_the_deformed_grid_leaves_with_its_checkpoint(make_napari_viewer, qtbot, intensity_file, registration_file):
    from napari_plugin._layer_book import GRID_LAYER

    seen = notifications()
    viewer, widget = viewer_with_slicer(make_napari_viewer, registration_file)
    wait_exact(qtbot, widget, 1)
    widget.grid.setChecked(True)
    qtbot.waitUntil(lambda: GRID_LAYER in viewer.layers, timeout=60000)
    assert [str(u) for u in viewer.layers[GRID_LAYER].units] == ["millimeter"] * 2
    qtbot.wait(200)  # the canvas updates units on its next draw
    assert not [m for m in seen if "Inconsistent units" in m]
    viewer.open(str(intensity_file), plugin="medinr")
    qtbot.waitUntil(lambda: widget.model.image.kind == "intensity", timeout=30000)
    wait_exact(qtbot, widget, widget.model.exact_count + 1)
    assert GRID_LAYER not in viewer.layers
    assert not (widget.grid.isChecked() and not widget.grid.isEnabled())  # never ticked but greyed


def test_the_cursor_readout_follows_the_plane_without_a_mouse_move(make_napari_viewer, qtbot, intensity_file):
    from napari_plugin._layer_book import SLICE_LAYER

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    widget.camera.zoom = widget.camera.zoom * 2
    wait_exact(qtbot, widget, 1)
    req = widget.model.shown.request
    r, c = req.shape[0] // 2 + 7, req.shape[1] // 2 - 5
    viewer.cursor.position = (req.translate[0] + r * req.scale[0], req.translate[1] + c * req.scale[1])
    before = widget.cursor.text()
    widget.offset.setValue(widget.offset.value() + 30.0)
    wait_exact(qtbot, widget, widget.model.exact_count + 1)
    req = widget.model.shown.request
    ras = req.plane.world_points(req.shape)[r, c]
    text = widget.cursor.text()
    assert text != before and text.startswith("RAS (" + ", ".join(f"{v:.1f}" for v in ras) + ") mm")
    assert f"{viewer.layers[SLICE_LAYER].data[r, c]:.4g}" in text


# -- what a radiologist expects --------------------------------------------------------------------------------
def _edge_labels(viewer) -> dict[str, str]:
    overlays = viewer.canvas.overlays
    return {side: overlays[f"medinr {side}"].text for side in ("top", "bottom", "left", "right")}


def test_orientation_labels_and_the_radiological_convention(make_napari_viewer, qtbot, intensity_file):
    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    assert widget.convention.currentText() == "neurological"
    expected = {
        ("axial", "neurological"): ("A", "P", "L", "R"),
        ("coronal", "neurological"): ("S", "I", "L", "R"),
        ("sagittal", "neurological"): ("S", "I", "P", "A"),
        ("axial", "radiological"): ("A", "P", "R", "L"),
        ("coronal", "radiological"): ("S", "I", "R", "L"),
        ("sagittal", "radiological"): ("S", "I", "A", "P"),  # the clinical display: facing the patient's left
    }
    for (preset, convention), (top, bottom, left, right) in expected.items():
        widget.convention.setCurrentText(convention)
        widget.preset.setCurrentText(preset)
        settle(qtbot, widget)
        labels = _edge_labels(viewer)
        assert labels == {"top": top, "bottom": bottom, "left": left, "right": right}, (preset, convention)
        assert all(viewer.canvas.overlays[f"medinr {s}"].visible for s in labels)
        assert all(viewer.canvas.overlays[f"medinr {s}"].opacity == 1.0 for s in labels)
        # what the labels say is where the world is: the named side of the patient lies towards that edge
        req = widget.model.shown.request
        world = req.plane.world_points(req.shape)
        axis = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
        i, sign = axis[right]
        assert sign * (world[req.shape[0] // 2, -1, i] - world[req.shape[0] // 2, 0, i]) > 0
        i, sign = axis[top]
        assert sign * (world[0, req.shape[1] // 2, i] - world[-1, req.shape[1] // 2, i]) > 0
    assert "radiological" in widget.status.text()  # the convention is stated
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: not viewer.canvas.overlays["medinr left"].visible, timeout=30000)


def test_the_edge_labels_are_drawn_transparent_while_the_slicer_docks_then_hidden(make_napari_viewer, qtbot):
    """Their first draw (shader, glyphs: 0.3 s) happens before any checkpoint is open, invisibly."""
    from napari_plugin._qt import SliceWidget
    from napari_plugin._qt._canvas import WARM_UP_TEXT

    viewer = make_napari_viewer(show=True)
    widget = SliceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    overlays = [viewer.canvas.overlays[f"medinr {side}"] for side in ("top", "bottom", "left", "right")]
    assert all(o.visible and o.opacity == 0.0 and o.text == WARM_UP_TEXT for o in overlays)
    qtbot.waitUntil(lambda: not any(o.visible for o in overlays), timeout=10000)
    assert all(o.text == "" for o in overlays)


def test_window_level_spans_the_data_and_offers_presets(make_napari_viewer, qtbot, intensity_file):
    from napari_plugin._layer_book import SLICE_LAYER

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    qtbot.waitUntil(lambda: widget.model.lattice_ready(), timeout=30000)
    layer = viewer.layers[SLICE_LAYER]
    volume = widget.model.lattice.volume("value")
    lo, hi = float(volume.min()), float(volume.max())
    # the slider spans the data, not the default window
    qtbot.waitUntil(lambda: np.allclose(layer.contrast_limits_range, (lo, hi), rtol=1e-3, atol=1e-3), timeout=10000)
    presets = [widget.window_preset.itemText(i) for i in range(widget.window_preset.count())]
    assert "full range" in presets and len(presets) >= 3
    widget.window_preset.setCurrentText("full range")
    qtbot.waitUntil(lambda: np.allclose(layer.contrast_limits, (lo, hi), rtol=1e-3, atol=1e-3), timeout=10000)
    # a window the user sets in napari's own controls is kept when the plane changes
    mine = (lo + 0.2 * (hi - lo), hi - 0.1 * (hi - lo))
    layer.contrast_limits = mine
    widget.offset.setValue(widget.offset.value() + 4.0)
    wait_exact(qtbot, widget, widget.model.exact_count + 1)
    assert np.allclose(layer.contrast_limits, mine) and widget.window_preset.currentText() == "custom"


def test_a_damaged_checkpoint_dropped_on_the_viewer_says_one_line(make_napari_viewer, tmp_path):
    seen = notifications()
    viewer = make_napari_viewer(show=True)
    bad = tmp_path / "bad.inr"
    bad.write_bytes(b"not a checkpoint")
    viewer.window._qt_viewer._qt_open([str(bad)], stack=False)  # what a drop or File > Open calls
    ours = [m for m in seen if "not a medinr checkpoint" in m]
    assert len(ours) == 1 and "\n" not in ours[0] and ours[0].startswith("medinr: ")
    assert not [m for m in seen if "Tried to read" in m] and len(viewer.layers) == 0


def test_with_the_slicer_docked_a_checkpoint_is_planned_off_the_main_thread(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, intensity_file, registration_file
):
    import threading

    from napari_plugin import _reader

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    first = widget.model.image
    planned_on: list[bool] = []
    plan = _reader.open_loaded
    monkeypatch.setattr(
        _reader, "open_loaded",
        lambda *a, **k: planned_on.append(threading.current_thread() is threading.main_thread()) or plan(*a, **k),
    )
    viewer.open(str(registration_file), plugin="medinr")
    assert not widget.idle()  # the opening is pending: tests and benchmarks that wait for idle wait for it
    qtbot.waitUntil(lambda: widget.model.image is not first and widget.idle(), timeout=30000)
    assert planned_on == [False] and widget.model.image.kind == "displacement"
    # a damaged file is still refused at once, in one line, with the slicer docked
    seen = notifications()
    bad = tmp_path / "bad.inr"
    bad.write_bytes(b"not a checkpoint")
    viewer.window._qt_viewer._qt_open([str(bad)], stack=False)
    ours = [m for m in seen if "not a medinr checkpoint" in m]
    assert len(ours) == 1 and "\n" not in ours[0] and not [m for m in seen if "Tried to read" in m]
    assert widget.idle() and widget.model.image.kind == "displacement"


def test_a_first_opening_with_the_slicer_docked_sets_up_its_view_in_steps(
    make_napari_viewer, qtbot, monkeypatch, intensity_file
):
    """The view's layer is added before the thread plans the file, without taking napari's selection in that
    step (its controls get a paint of their own, after the exact frame); a failed first opening leaves no layer."""
    from medinr.errors import MedinrError
    from napari_plugin import _reader
    from napari_plugin._layer_book import SLICE_LAYER
    from napari_plugin._qt import SliceWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1100, 800)
    widget = SliceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    plan = _reader.open_loaded
    layers_when_planned: list[list[str]] = []

    def failing(*args, **kwargs):
        raise MedinrError("the speed probe failed")

    seen = notifications()
    monkeypatch.setattr(_reader, "open_loaded", failing)
    viewer.open(str(intensity_file), plugin="medinr")
    assert widget.canvas._warm_up.isActive() is False  # the warm-up letters are not drawn again meanwhile
    qtbot.waitUntil(lambda: widget.idle() and any("speed probe" in m for m in seen), timeout=30000)
    ours = [m for m in seen if "speed probe" in m]  # our one line, not a worker's traceback
    assert ours == ["medinr: the speed probe failed"] and not [m for m in seen if "Traceback" in m]
    assert _layer_names(viewer) == [] and widget.model.image is None

    def recording(*args, **kwargs):
        layers_when_planned.append(_layer_names(viewer))
        return plan(*args, **kwargs)

    monkeypatch.setattr(_reader, "open_loaded", recording)
    viewer.open(str(intensity_file), plugin="medinr")
    assert SLICE_LAYER not in viewer.layers  # not inside napari's reader call: a step of its own
    qtbot.waitUntil(lambda: SLICE_LAYER in viewer.layers, timeout=30000)
    assert not viewer.layers.selection
    wait_exact(qtbot, widget, 1)
    assert layers_when_planned == [[SLICE_LAYER]] and _layer_names(viewer) == [SLICE_LAYER]
    qtbot.waitUntil(lambda: viewer.layers.selection.active is viewer.layers[SLICE_LAYER], timeout=10000)
    assert viewer.layers[SLICE_LAYER].visible and not_blank(viewer)


def test_tilts_inside_the_dims_extent_spare_napari_its_dims_update(make_napari_viewer, qtbot, intensity_file):
    """A tilt changes the frame's shape; napari recomputes the viewer's dims for new data (5-6 ms) only when the
    view reaches past the extent they span, and they always span the slice layer."""
    from napari_plugin._layer_book import SLICE_LAYER

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    layer = viewer.layers[SLICE_LAYER]
    shapes, announced = [layer.data.shape], []
    layer.events.data.connect(lambda event: announced.append(layer.data.shape))
    for tilt in (6.0, 0.0, 6.0, 0.0, 3.0):
        widget.tilt_col.setValue(tilt)
        wait_exact(qtbot, widget, widget.model.exact_count + 1)
        shapes.append(layer.data.shape)
        lo, hi = layer.extent.world  # the displayed (last two) dims
        ranges = viewer.dims.range[-2:]
        assert all(r.start <= a + 1e-6 and r.stop >= b - 1e-6 for r, a, b in zip(ranges, lo[-2:], hi[-2:]))
    changed = sum(a != b for a, b in zip(shapes, shapes[1:]))
    assert changed >= 3 and len(announced) < changed


def test_a_nifti_opens_at_its_world_position_without_a_reader_dialog(
    make_napari_viewer, monkeypatch, tmp_path, intensity_file
):
    from napari._qt.dialogs import qt_reader_dialog
    from napari.plugins import _npe2

    from medinr.io import save_image

    asked: list[str] = []
    monkeypatch.setattr(
        qt_reader_dialog.QtReaderDialog, "get_user_choices", lambda self: asked.append("dialog") or (None, False)
    )
    viewer = make_napari_viewer(show=True)
    viewer.open(str(intensity_file), plugin="medinr")  # the plugin is in use (a checkpoint, the sample or the slicer)
    volume = np.random.default_rng(0).random(GEOM.shape).astype(np.float32)
    path = save_image(tmp_path / "recon.nii.gz", volume, GEOM)
    assert len(_npe2.get_readers(str(path))) >= 2  # napari's own reader claims .nii.gz as well
    viewer.window._qt_viewer._qt_open([str(path)], stack=False)
    assert not asked
    layer = viewer.layers["recon"]
    assert np.allclose(layer.affine.affine_matrix, GEOM.affine) and np.array_equal(layer.data, volume)


def test_linked_views_follow_a_click_with_a_crosshair(make_napari_viewer, qtbot, intensity_file):
    from qtpy.QtCore import QPoint, Qt

    from napari_plugin._layer_book import CROSSHAIR_LAYER, LABELS_LAYER, tile_layer

    viewer, widget = viewer_with_slicer(make_napari_viewer, intensity_file)
    wait_exact(qtbot, widget, 1)
    widget.linked.setChecked(True)
    keys = ("axial", "coronal", "sagittal")
    qtbot.waitUntil(lambda: widget.idle() and all(widget.model.shown_request(k) for k in keys), timeout=60000)
    assert set(_layer_names(viewer)) == {*(tile_layer(k) for k in keys), CROSSHAIR_LAYER, LABELS_LAYER}
    letters = list(viewer.layers[LABELS_LAYER].features["letter"])
    assert letters[:4] == ["A", "P", "L", "R"] and letters[-4:] == ["S", "I", "P", "A"]  # axial ... sagittal
    # a click in the axial view moves the crosshair there: the other two planes pass through that point
    tile = widget.model.tile("axial")
    rc = (tile.origin[0] + 0.3 * tile.plane.fov_mm[0], tile.origin[1] + 0.7 * tile.plane.fov_mm[1])
    cam = widget.camera
    h, w = widget.canvas_size()
    x = int(round((rc[1] - cam.center[-1]) * cam.zoom + w / 2))
    y = int(round((rc[0] - cam.center[-2]) * cam.zoom + h / 2))
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(x, y))
    target = tile.plane.centre + (rc[0] - tile.origin[0] - tile.plane.fov_mm[0] / 2) * tile.plane.row_axis
    target = target + (rc[1] - tile.origin[1] - tile.plane.fov_mm[1] / 2) * tile.plane.col_axis
    qtbot.waitUntil(lambda: np.allclose(widget.model.crosshair, target, atol=1.5 / cam.zoom + 1e-6), timeout=10000)
    wait_exact(qtbot, widget, widget.model.exact_count + 1)
    for key in ("coronal", "sagittal"):
        plane = widget.model.shown_request(key).plane
        assert abs((plane.centre - widget.model.crosshair) @ plane.normal) < 1e-6
    # the crosshair is drawn through the point in every view
    lines = viewer.layers[CROSSHAIR_LAYER].data
    assert len(lines) == 6
    assert widget.last_error is None
