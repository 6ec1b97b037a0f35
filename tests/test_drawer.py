"""The figure-drawing child process of a command (:mod:`medinr.apps.drawer`) and its use by the writer."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from medinr.apps import drawer as drawer_module
from medinr.apps import writer
from medinr.apps.drawer import Drawer
from medinr.apps.result import AppResult, Figure, ImageOutput
from medinr.figures import panel_figure
from medinr.geometry import Geometry
from medinr.outputs import MANIFEST, OutputDir


def _panels() -> dict:
    ramp = np.outer(np.arange(16.0), np.ones(12))
    return {"panels": {"a": ramp, "b": ramp + 1.0}, "error_of": {"|a-b|": ("a", "b")}}


def _png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_child_draws_the_figures_and_exits(tmp_path):
    with Drawer() as drawer:
        child = drawer._child
        drawn = drawer.draw([("one.png", panel_figure, {**_panels(), "path": tmp_path / "one.png"}),
                             ("two.png", panel_figure, {**_panels(), "path": tmp_path / "two.png", "title": "t"})])
    assert drawn == {"one.png", "two.png"}
    assert _png(tmp_path / "one.png") and _png(tmp_path / "two.png")
    assert child.returncode == 0


def test_a_figure_the_child_cannot_draw_is_left_to_the_parent(tmp_path):
    """The child skips a figure whose drawing raises (here: its folder does not exist) and still draws the rest."""
    with Drawer() as drawer:
        drawn = drawer.draw([("bad.png", panel_figure, {**_panels(), "path": tmp_path / "missing" / "bad.png"}),
                             ("good.png", panel_figure, {**_panels(), "path": tmp_path / "good.png"})])
    assert drawn == {"good.png"}
    assert _png(tmp_path / "good.png")


def test_a_drawer_closed_unused_ends_its_child():
    drawer = Drawer()
    child = drawer._child
    drawer.close()
    assert child.wait(timeout=10) is not None
    assert drawer.draw([]) == set()  # a closed drawer draws nothing: the writer draws every figure itself


def test_no_child_process_means_the_parent_draws(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    with Drawer() as drawer:
        assert drawer.draw([("one.png", panel_figure, {**_panels(), "path": tmp_path / "one.png"})]) == set()


def _result(figures):
    g = Geometry((16, 12), np.diag([1.0, 1.0, 1.0]))
    return AppResult([ImageOutput("image.nii.gz", np.ones(g.shape, np.float32), g)], {}, {"metrics": {}},
                     {"total": 1.0}, figures, "done")


def test_publish_with_a_drawer_writes_every_output(tmp_path):
    names = ["image.nii.gz", "panel.png", "metrics.json"]
    with OutputDir(tmp_path / "out", names) as out, Drawer() as drawer:
        writer.publish(_result([Figure("panel.png", panel_figure, _panels())]), out, drawer)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != MANIFEST) == sorted(names)
    assert _png(tmp_path / "out" / "panel.png")
    assert "writing" in json.loads((tmp_path / "out" / "metrics.json").read_text())["timing"]


def test_a_figure_that_fails_in_the_child_raises_its_own_error_here(tmp_path, monkeypatch):
    """The parent draws again what the child did not, so a real failure is raised as itself (and nothing is
    published); a drawing function the child cannot receive (not picklable) is simply drawn here."""
    calls = []

    def local_draw(path):  # a closure: it cannot travel to the child
        calls.append(path)
        path.write_bytes(b"drawn here")

    names = ["image.nii.gz", "local.png", "metrics.json"]
    with OutputDir(tmp_path / "out", names) as out, Drawer() as drawer:
        writer.publish(_result([Figure("local.png", local_draw)]), out, drawer)
    assert len(calls) == 1 and (tmp_path / "out" / "local.png").read_bytes() == b"drawn here"

    def no_space(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", no_space)  # in this process only: the child draws
    names = ["image.nii.gz", "panel.png", "metrics.json"]
    with OutputDir(tmp_path / "fine", names) as out, Drawer() as drawer:
        writer.publish(_result([Figure("panel.png", panel_figure, _panels())]), out, drawer)
    assert _png(tmp_path / "fine" / "panel.png")

    with pytest.raises(Exception, match="[Nn]o space left"):
        with OutputDir(tmp_path / "bad", names) as out, Drawer() as drawer:
            drawer.close()  # the child is gone: this process draws, and its error is the one raised
            writer.publish(_result([Figure("panel.png", panel_figure, _panels())]), out, drawer)
    assert not (tmp_path / "bad").exists()


def test_execute_ends_the_child_when_the_run_fails(tmp_path, monkeypatch):
    from medinr import apps
    from medinr.apps.requests import FitRequest
    from medinr.errors import MedinrError

    started = []
    real = drawer_module.Drawer

    class Recording(real):
        def __init__(self):
            super().__init__()
            started.append(self._child)

    monkeypatch.setattr(drawer_module, "Drawer", Recording)
    with pytest.raises(MedinrError):
        apps.execute(FitRequest(image=str(tmp_path / "absent.nii.gz"), progress=False), str(tmp_path / "out"),
                     draw_aside=True)
    assert len(started) == 1 and started[0].wait(timeout=10) is not None
    assert not (tmp_path / "out").exists()


def test_an_interrupt_while_the_child_draws_ends_the_child(tmp_path, monkeypatch):
    drawer = Drawer()
    child = drawer._child

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(child, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        drawer.draw([("one.png", panel_figure, {**_panels(), "path": tmp_path / "one.png"})])
    assert child.wait(timeout=10) is not None and not (tmp_path / "one.png").exists()
