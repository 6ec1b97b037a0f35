"""Shared pieces of the viewer tests: small checkpoints, a viewer with the slicer docked, waits and user input.

Imported by ``test_napari_plugin.py`` and ``test_viewer_user.py`` (fixtures are re-exported by name there).
napari keeps its preferences in ``NAPARI_CONFIG``: the tests point it at a temporary file before napari reads
it, so that nothing they do (the NIfTI reader preference included) reaches the user's settings.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp(prefix="medinr-napari-")) / "settings.yaml"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from medinr.checkpoint import save_checkpoint  # noqa: E402
from medinr.continuous import ContinuousImage  # noqa: E402
from medinr.geometry import Geometry, WorldBox  # noqa: E402
from medinr.models import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari_plugin" / "napari.yaml"
#: A left-handed (LAS) 2 mm grid: screen orientation must follow world RAS, not the array axes.
GEOM = Geometry(
    (24, 28, 20), np.diag([-2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, 20], [0, 0, 0, -30], [0, 0, 0, 5], [0] * 4])
)

needs_display = pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"),
    reason="needs a display: run under xvfb-run -a -s '-screen 0 1280x1024x24'",
)


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
    """A small untrained SIREN on a 2 mm LAS grid: structured values, cheap to evaluate."""
    torch.manual_seed(0)
    model = build_model("siren", 3, 1, hidden=32, layers=2, omega_0=10.0)
    ckpt = ContinuousImage(model, GEOM, {"kind": "intensity", "scale": 100.0, "offset": 50.0})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "brain.inr", ckpt)


@pytest.fixture(scope="module")
def registration_file(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    geom = Geometry((16, 16, 16), np.diag([2.0, 2.0, 2.0, 1.0]))
    box = geom.world_box()
    model = build_model("siren", 3, 3, hidden=16, layers=2, omega_0=5.0)
    field = ContinuousImage(
        model, geom, {"kind": "displacement", "scale": 3.0}, frame="world_box", world_box=WorldBox(box.lo, box.hi)
    )
    return save_checkpoint(tmp_path_factory.mktemp("reg") / "reg.inr", field)


def viewer_with_slicer(make_napari_viewer, path: Path):
    """A shown viewer with ``path`` opened by the plugin and the slicer docked (as Plugins > INR slicer does)."""
    from napari_plugin._qt import SliceWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1100, 800)  # Xvfb's default window leaves the canvas no width beside two docks
    viewer.open(str(path), plugin="medinr")
    widget = SliceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def wait_exact(qtbot, widget, count: int, timeout: int = 60000) -> None:
    """Until ``count`` exact frames have been shown and nothing else is pending."""
    qtbot.waitUntil(lambda: widget.model.exact_count >= count and widget.idle(), timeout=timeout)


def settle(qtbot, widget, timeout: int = 60000) -> None:
    """Until nothing is pending and the single view shows its exact frame (also after a change that did nothing)."""
    qtbot.waitUntil(
        lambda: widget.idle() and widget.model.shown is not None and widget.model.shown.tier == "exact",
        timeout=timeout,
    )


def wait_frame(qtbot, widget, timeout: int = 60000) -> None:
    """Until one more frame (any tier) has been shown."""
    n = widget.model.fast_count + widget.model.exact_count
    qtbot.waitUntil(lambda: widget.model.fast_count + widget.model.exact_count > n, timeout=timeout)


def enter_text(qtbot, line_edit, text: str) -> None:
    """Select the field's text, type ``text`` and press Enter, as a user does."""
    from qtpy.QtCore import Qt

    line_edit.setFocus()
    line_edit.selectAll()
    qtbot.keyClicks(line_edit, text)
    qtbot.keyClick(line_edit, Qt.Key.Key_Return)


def not_blank(viewer) -> bool:
    shot = viewer.screenshot(canvas_only=True, flash=False)
    return shot.shape[-1] in (3, 4) and shot[..., :3].std() > 5


def notifications():
    """Messages napari shows as notifications from now on (a list that grows)."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    return seen
