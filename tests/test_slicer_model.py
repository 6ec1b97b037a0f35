"""The slicer without Qt or a display: its model, the viewport maths, the tiers' rules, window/level, orientation
labels and the layer bookkeeping. Nothing here imports napari or Qt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("psygnal")

from medinr.continuous import ContinuousImage  # noqa: E402
from medinr.geometry import Geometry  # noqa: E402
from medinr.models import build_model  # noqa: E402
from medinr.render import build_lattice, default_plane, render_plane  # noqa: E402
from napari_plugin._layer_book import (  # noqa: E402
    CONTEXT_LAYER,
    CROSSHAIR_LAYER,
    GRID_LAYER,
    LABELS_LAYER,
    SLICE_LAYER,
    VOLUME_LAYER,
    own_to_remove,
    tile_layer,
    to_park,
    wanted,
)
from napari_plugin._orientation import direction_label, edge_labels  # noqa: E402
from napari_plugin._slicer_model import SlicerModel, ViewState  # noqa: E402
from napari_plugin._tiers import EXACT, LATTICE, FrameLog, RenderPolicy, exact_steps, fast_frame  # noqa: E402
from napari_plugin._viewport import MAIN, Tile, ViewRequest, crosshair_lines, fit_zoom, visible_request  # noqa: E402
from napari_plugin._window import CUSTOM, WindowLevel, display_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: LAS storage (first axis towards the patient's left): the screen must follow RAS, not the array.
GEOM = Geometry((20, 24, 16), np.diag([-2.0, 2.0, 2.5, 1.0]) + np.array([[0, 0, 0, 30], [0] * 4, [0] * 4, [0] * 4]))


@pytest.fixture(scope="module")
def image() -> ContinuousImage:
    torch.manual_seed(0)
    model = build_model("siren", 3, 1, hidden=24, layers=2, omega_0=8.0)
    return ContinuousImage(model, GEOM, {"kind": "intensity", "scale": 100.0, "offset": 50.0})


@pytest.fixture
def model(image) -> SlicerModel:
    m = SlicerModel()
    m.set_image(image)
    return m


def _through(plane, point) -> bool:
    return abs(float((plane.centre - point) @ plane.normal)) < 1e-9


def test_the_model_modules_import_neither_qt_nor_napari():
    code = (
        "import sys\n"
        "import napari_plugin._slicer_model, napari_plugin._layer_book, napari_plugin._readout\n"
        "bad = {m.split('.')[0] for m in sys.modules} & {'qtpy', 'PyQt6', 'PyQt5', 'napari', 'vispy'}\n"
        "sys.exit(f'imported {sorted(bad)}' if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# -- the model -------------------------------------------------------------------------------------------------
def test_a_refused_change_leaves_controls_and_views_as_they_were(model):
    errors, views = [], []
    model.events.error.connect(errors.append)
    model.events.views.connect(views.append)
    before, plane = model.controls, model.base_plane()
    assert not model.update(normal="0,0,0", offset_mm=7.0)
    assert model.controls == before and np.allclose(model.base_plane().centre, plane.centre) and not views
    assert "normal" in errors[-1] and "normal" in model.status()
    # the next valid change works and clears the error
    assert model.update(offset_mm=12.0)
    assert errors[-1] == "" and model.error is None and views == [False]
    plane = model.base_plane()
    lo, hi = model.image.bounds()
    assert np.allclose(plane.normal, (0, 0, 1)) and (plane.centre - (lo + hi) / 2) @ plane.normal == pytest.approx(12)


def test_a_preset_replaces_a_typed_normal(model):
    assert model.update(normal="1,0,0")
    assert np.allclose(model.base_plane().normal, (1, 0, 0))
    refits = []
    model.events.views.connect(refits.append)
    assert model.update(preset="coronal")
    assert model.controls.normal == "" and np.allclose(model.base_plane().normal, (0, 1, 0)) and refits == [True]
    assert model.update(offset_mm=3.0) and refits[-1] is False  # an offset keeps the camera


def test_the_convention_mirrors_the_screen_not_the_plane(model):
    neuro = model.base_plane()
    assert model.update(convention="radiological")
    radio = model.base_plane()
    assert np.allclose(neuro.normal, radio.normal) and np.allclose(neuro.centre, radio.centre)
    assert np.allclose(neuro.col_axis, -radio.col_axis) and np.allclose(neuro.row_axis, radio.row_axis)
    assert model.edge_labels() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert "radiological" in model.status()


def test_linked_views_meet_at_the_crosshair(model):
    assert model.update(linked=True)
    tiles = model.tiles()
    assert [t.key for t in tiles] == ["axial", "coronal", "sagittal"] and model.edge_labels() is None
    points, letters = model.tile_labels()
    assert letters == ["A", "P", "L", "R", "S", "I", "L", "R", "S", "I", "P", "A"]
    assert all(t.contains(p) for t, p in zip(np.repeat(tiles, 4), points))
    assert all(_through(t.plane, model.crosshair) for t in tiles)
    for a, b in zip(tiles, tiles[1:]):  # side by side, not overlapping
        assert a.rect[3] < b.rect[1]
    point = model.crosshair + np.array([4.0, -6.0, 3.0])
    model.set_crosshair(point)
    assert all(_through(t.plane, point) for t in model.tiles())
    model.move_along_normal("coronal", 5.0)
    assert np.allclose(model.crosshair, point + [0, 5, 0])
    # the crosshair lines of each view cross at the point's projection
    lines = crosshair_lines(model.tiles(), model.crosshair)
    for tile, (horizontal, vertical) in zip(model.tiles(), zip(lines[::2], lines[1::2])):
        assert np.allclose(tile.world((horizontal[0, 0], vertical[0, 1])), model.crosshair)


def test_the_layout_is_computed_once_per_change_and_follows_image_and_controls(model, image, monkeypatch):
    import napari_plugin._slicer_model as slicer_model

    calls = []
    real = slicer_model.default_plane
    monkeypatch.setattr(slicer_model, "default_plane", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    assert model.update(offset_mm=4.0)
    first = model.tiles()
    assert model.tiles() == first and model.tile(MAIN) == first[0] and len(calls) == 1
    assert model.update(offset_mm=-4.0)
    assert np.isclose(model.tiles()[0].plane.centre[2] - first[0].plane.centre[2], -8.0) and len(calls) == 2
    other = ContinuousImage(image.model, Geometry((20, 24, 16), np.diag([2.0, 2.0, 3.0, 1.0])), image.output)
    model.set_image(other)  # the same controls on another image: its own planes
    assert model.tiles()[0].plane.centre[2] != first[0].plane.centre[2]


def test_the_readout_follows_the_frame_on_screen(model):
    texts = []
    model.events.cursor.connect(texts.append)
    view = ViewState((20.0, 25.0), 4.0, (200, 300))
    (request,) = model.requests(view)
    rc = (request.translate[0] + 10 * request.scale[0], request.translate[1] + 30 * request.scale[1])
    model.set_cursor(rc)
    assert texts == [""]  # nothing on screen yet
    frame = np.arange(np.prod(request.shape), dtype=np.float32).reshape(request.shape)
    assert model.accept(model.log.begin(), EXACT, request, frame, 0.01)
    ras = request.plane.world_points(request.shape)[10, 30]
    assert texts[-1] == "RAS (" + ", ".join(f"{v:.1f}" for v in ras) + f") mm  value: {frame[10, 30]:.4g}"
    # a new plane: the read-out changes with the frame of that plane, without a cursor move
    model.update(offset_mm=30.0)
    (moved,) = model.requests(view)
    assert model.accept(model.log.begin(), LATTICE, moved, frame + 1, 0.01)
    ras = moved.plane.world_points(moved.shape)[10, 30]
    assert texts[-1].startswith("RAS (" + ", ".join(f"{v:.1f}" for v in ras))
    assert texts[-1].endswith(f"value: {frame[10, 30] + 1:.4g}")


def test_cached_and_exact_frames_of_a_request_agree(model, image):
    model.set_lattice(build_lattice(image))
    (request,) = model.requests(ViewState((25.0, 20.0), 3.0, (120, 160)))
    fast, exact = fast_frame(model.lattice, request, "value"), _run(exact_steps(image, request, "value"))
    assert fast.shape == exact.shape == request.shape
    assert np.allclose(exact, render_plane(image, request.plane, request.shape), atol=1e-5)
    inside = exact != 0
    assert np.abs(fast - exact)[inside].mean() < 0.1 * np.abs(exact[inside]).std()


def _run(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# -- viewport --------------------------------------------------------------------------------------------------
def test_visible_request_is_the_tile_on_screen_on_a_grid_anchored_to_its_corner(image):
    plane = default_plane(image, "axial")
    tile = Tile(MAIN, plane, (5.0, -3.0))
    r0, c0, r1, c1 = tile.rect
    whole = visible_request(tile, ((r0 + r1) / 2, (c0 + c1) / 2), fit_zoom([tile], (600, 500)), (600, 500))
    step = whole.scale[0]
    assert whole.shape == (int(np.ceil(plane.fov_mm[0] / step - 1e-9)), int(np.ceil(plane.fov_mm[1] / step - 1e-9)))
    assert np.allclose(whole.translate, (r0 + step / 2, c0 + step / 2))
    # the frame's pixels cover the tile from its corner, to within one pixel past its far edges
    lo_r, lo_c, hi_r, hi_c = whole.rect
    assert np.allclose((lo_r, lo_c), (r0, c0)) and r1 <= hi_r < r1 + step and c1 <= hi_c < c1 + step
    # zoomed in and panned: only the visible part, whole pixels of the same grid, placed where the tile is
    part = visible_request(tile, (r0 + 20.3, c0 + 17.1), 8.0, (100, 120))
    assert all(0 <= n - m <= 1 for n, m in zip(part.shape, (100, 120)))  # partly visible pixels at the edges
    k = (np.asarray(part.translate) - (r0, c0)) / part.scale[0] - 0.5
    assert np.allclose(k, np.round(k))
    corners = part.plane.world_points(part.shape)
    assert np.allclose(corners[0, 0], tile.world(part.translate))
    last = (part.translate[0] + (part.shape[0] - 1) * part.scale[0], part.translate[1] + (part.shape[1] - 1) * step)
    assert np.allclose(corners[-1, -1], tile.world((last[0], part.translate[1] + (part.shape[1] - 1) * part.scale[1])))
    assert np.allclose(part.world(part.translate), corners[0, 0]) and part.pixel_of(part.translate) == (0, 0)
    assert visible_request(tile, (r1 + 500, c1 + 500), 8.0, (100, 120)) is None  # off screen


# -- tiers -----------------------------------------------------------------------------------------------------
def _request(key: str = MAIN) -> ViewRequest:
    plane = default_plane(ContinuousImage(build_model("siren", 3, 1, hidden=8, layers=1), GEOM), "axial")
    return ViewRequest(plane, (4, 4), (1.0, 1.0), (0.5, 0.5), key)


def test_the_frame_log_keeps_the_newest_view_and_never_trades_exact_for_cached():
    log, req, frame = FrameLog(), _request(), np.zeros((4, 4), np.float32)
    g1 = log.begin()
    g2 = log.begin()  # a drag outran the render of g1
    assert log.accept(g1, LATTICE, req, frame, 0.0)  # an older view's cached frame still beats nothing
    assert not log.accept(g1, EXACT, req, frame, 0.0)  # but its exact frame is stale
    assert log.accept(g2, EXACT, req, frame, 0.0)
    assert not log.accept(g2, LATTICE, req, frame, 0.0)  # the exact frame of this view arrived first
    assert not log.accept(g1, LATTICE, req, frame, 0.0)  # never back to an older view
    log.reset()  # another image: nothing computed before counts
    assert not log.accept(g2, LATTICE, req, frame, 0.0) and not log.shown
    assert log.accept(log.begin(), LATTICE, req, frame, 0.0)
    assert log.exact_count == 1 and log.fast_count == 2


def test_the_exact_frame_waits_for_a_stream_of_changes_to_end():
    policy = RenderPolicy(quiet_s=0.15, idle_s=0.4)
    assert not policy.change(10.0) and policy.exact_delay(False, True) == 0.0  # one change: at once
    assert policy.change(10.05) and policy.exact_delay(True, True) == 0.15  # a drag: after it stops
    assert not policy.change(11.0)
    assert policy.exact_delay(False, False) == 0.4  # the lattice holds the view: after an idle moment


# -- window ----------------------------------------------------------------------------------------------------
def test_the_default_window_of_a_brain_keeps_white_matter_and_the_slider_spans_the_data(samples):
    from medinr.io import load_image

    t1, _ = load_image(samples / "mni152_t1_2mm.nii.gz")
    labels, _ = load_image(samples / "mni152_labels_2mm.nii.gz")
    shown = display_for("intensity", "value", t1)
    lo, hi = shown.limits
    white = t1[labels == 2]
    assert shown.colormap == "gray" and hi >= np.percentile(white, 99) and hi <= t1.max()
    assert lo <= np.percentile(t1[labels == 0], 50)  # background stays black
    assert shown.data_range == (float(t1.min()), float(t1.max())) and shown.slider_range() == shown.data_range
    assert shown.presets["full range"] == shown.data_range and len(shown.presets) >= 3
    # the window that was the default before (percentiles of the whole volume, background included) clipped it
    assert np.percentile(t1, 99.5) < np.percentile(white, 99)


def test_signed_quantities_are_centred_and_phase_is_cyclic():
    rng = np.random.default_rng(0)
    jac = display_for("displacement", "jacobian", 1 + 0.1 * rng.standard_normal(5000))
    assert jac.colormap == "PiYG" and sum(jac.limits) / 2 == pytest.approx(1.0)
    comp = display_for("displacement", 0, 2 * rng.standard_normal(5000))
    assert comp.colormap == "bwr" and sum(comp.limits) == pytest.approx(0.0)
    assert display_for("complex", "phase", rng.random(100)).limits == (-np.pi, np.pi)


def test_a_window_set_by_hand_survives_new_statistics_until_the_quantity_changes():
    window = WindowLevel()
    window.select("value")
    first = display_for("intensity", "value", np.linspace(0, 100, 1000))
    assert window.learn("value", first) and window.name == "tissue" and window.limits == first.limits
    assert window.set_limits((10.0, 60.0)) and window.name == CUSTOM
    assert not window.learn("value", display_for("intensity", "value", np.linspace(0, 120, 1000)))
    assert window.limits == (10.0, 60.0)
    assert window.choose("full range") and window.limits == (0.0, 120.0)
    assert window.set_limits((0.0, 120.0)) is False and window.name == "full range"
    assert window.select("magnitude") and window.limits is None


# -- orientation and layers ------------------------------------------------------------------------------------
def test_orientation_letters_name_world_directions():
    assert [direction_label(v) for v in np.eye(3)] == ["R", "A", "S"]
    assert [direction_label(-v) for v in np.eye(3)] == ["L", "P", "I"]
    assert direction_label([-0.8, 0.6, 0.05]) == "LA" and direction_label([0.1, 0.2, -0.97]) == "I"
    axial = default_plane(ContinuousImage(build_model("siren", 3, 1, hidden=8, layers=1), GEOM), "axial")
    assert edge_labels(axial) == {"top": "A", "bottom": "P", "left": "L", "right": "R"}


def test_layer_bookkeeping_parks_every_checkpoint_and_keeps_only_the_modes_own_layers():
    own = {"medinr_slicer": True}
    present = [
        ("brain", {"medinr_checkpoint": object(), "medinr_role": "volume"}),
        ("reg |u| mm", {"medinr_checkpoint": object(), "medinr_role": "volume"}),
        ("scan", {}),
        (SLICE_LAYER, own),
        (GRID_LAYER, own),
    ]
    assert to_park(present) == ["brain", "reg |u| mm"]
    two_d = wanted(2, ["axial", "coronal", "sagittal"], grid=False, linked=True)
    assert two_d.names == (*(tile_layer(k) for k in ("axial", "coronal", "sagittal")), CROSSHAIR_LAYER, LABELS_LAYER)
    assert own_to_remove(present, two_d) == [SLICE_LAYER, GRID_LAYER]
    assert wanted(3, [MAIN], grid=True, linked=False).names == (VOLUME_LAYER, CONTEXT_LAYER)
    assert own_to_remove(present, wanted(2, [MAIN], grid=True, linked=False)) == []
