"""Regenerate the README screenshots of the shipped sample INR in the napari slicer (run under Xvfb):

    xvfb-run -a -s "-screen 0 1920x1200x24" python bench/screenshots.py [--out docs/screenshots]

Writes axial.png, coronal.png, sagittal.png, oblique.png (single views, exact frames, orientation labels,
neurological convention), radiological.png (the axial view in the radiological convention), linked.png (the
linked axial / coronal / sagittal views with their crosshair) and 3d.png (the lattice volume-rendered with the
plane in place). Each is the canvas only, on a palette of 240 greys and the overlay colours (< 150 kB each).
The sample's lattice cache ($MEDINR_CACHE, else ~/.cache/medinr) is built on the first run (seconds to a minute).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Mesa's softpipe, the reference rasterizer the README's screenshots were drawn with: slower than llvmpipe (a few
# seconds here), and its pixels do not depend on the CPU's vector units. Read when the first GL context is made.
os.environ.setdefault("GALLIUM_DRIVER", "softpipe")
# napari's preferences of this run in a temporary file: the plugin registers itself as the NIfTI reader there
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(prefix="medinr-bench-"), "settings.yaml"))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: Canvas size (h, w) of the screenshots, screen pixels.
CANVAS_HW = (520, 600)
VIEWS = {
    "axial": {"preset": "axial", "offset": 8.0},
    "coronal": {"preset": "coronal", "offset": -14.0},
    "sagittal": {"preset": "sagittal", "offset": 14.0},
    "oblique": {"preset": "axial", "offset": 10.0, "tilt": (25.0, 15.0)},
    "radiological": {"preset": "axial", "offset": 8.0, "convention": "radiological"},
}


def _viewer(sample: Path):
    import napari
    from viewer_latency import run_until

    from napari_plugin._qt import SliceWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1300, 900)
    viewer.open(str(sample), plugin="medinr")
    widget = SliceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    run_until(lambda: False, 0.5)
    h, w = viewer.canvas.size
    viewer.window.resize(1300 + CANVAS_HW[1] - int(w), 900 + CANVAS_HW[0] - int(h))
    run_until(lambda: False, 0.5)
    return viewer, widget


def _settle(widget, exact: bool = True) -> None:
    from viewer_latency import run_until

    from napari_plugin import _lattices

    def done() -> bool:
        image = widget.model.image
        final = image is not None and _lattices.is_final(image) and widget.model.lattice is _lattices.current(image)
        shown = list(widget.model.log.shown.values())
        return final and widget.idle() and bool(shown) and (not exact or all(s.tier == "exact" for s in shown))

    run_until(done, 300.0)
    run_until(lambda: False, 0.5)


def _set_view(widget, preset: str = "axial", normal: str = "", offset: float = 0.0, tilt=(0.0, 0.0),
              convention: str = "neurological") -> None:
    widget.model.update(preset=preset, normal=normal, offset_mm=offset, tilt_deg=tuple(tilt), convention=convention)


def _palette():
    """240 greys and the overlay colours (orientation letters, crosshair) with their half-tones."""
    from PIL import Image

    colours = [(v, v, v) for v in np.linspace(0, 255, 240).round().astype(int)]
    for rgb in ((255, 212, 0), (0, 200, 255)):
        colours += [tuple(int(round(f * c)) for c in rgb) for f in (0.25, 0.5, 0.75, 1.0)]
    colours += [(0, 0, 0)] * (256 - len(colours))
    palette = Image.new("P", (1, 1))
    palette.putpalette([c for rgb in colours for c in rgb])
    return palette


def _save(viewer, path: Path) -> int:
    from PIL import Image

    shot = viewer.screenshot(canvas_only=True, flash=False)
    image = Image.fromarray(shot[..., :3]).quantize(palette=_palette(), dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    from viewer_latency import run_until

    from napari_plugin._sample_data import SHIPPED

    args.out.mkdir(parents=True, exist_ok=True)
    viewer, widget = _viewer(SHIPPED)
    _settle(widget)
    for name, view in VIEWS.items():
        _set_view(widget, **view)
        _settle(widget)
        print(f"{name}.png: {_save(viewer, args.out / f'{name}.png') / 1000:.0f} kB", flush=True)
    _set_view(widget)
    widget.model.update(linked=True)
    _settle(widget)
    print(f"linked.png: {_save(viewer, args.out / 'linked.png') / 1000:.0f} kB", flush=True)
    widget.model.update(linked=False, offset_mm=6.0, tilt_deg=(0.0, 20.0))
    _settle(widget)
    viewer.dims.ndisplay = 3
    run_until(lambda: "medinr plane 3D" in viewer.layers, 60.0)
    viewer.camera.angles = (0.0, -30.0, 120.0)
    viewer.camera.zoom *= 1.2
    time.sleep(0.2)
    run_until(lambda: False, 2.0)
    print(f"3d.png: {_save(viewer, args.out / '3d.png') / 1000:.0f} kB", flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
