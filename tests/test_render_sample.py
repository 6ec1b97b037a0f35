"""The shipped sample INR looks like the scan it represents: >= 38 dB in the brain on 512x512 planes."""

from __future__ import annotations

from pathlib import Path

import pytest

from medinr.checkpoint import load_checkpoint
from medinr.io import load_image
from medinr.render import default_plane, fit_fov_to_shape, render_plane
from medinr.render.fidelity import brain_region, plane_psnr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "napari_plugin" / "data"


@pytest.mark.parametrize(
    "spec, tilt", [("axial", (0, 0)), ("1,1,2", (10, -15)), ("coronal", (0, 0)), ("sagittal", (0, 0))]
)
def test_shipped_sample_reaches_the_fidelity_target(spec, tilt):
    from napari_plugin._sample_data import SCAN_NAME, SHIPPED

    image = load_checkpoint(SHIPPED)
    source = load_image(ROOT / "sample_scans" / SCAN_NAME)
    labels, lgeom = load_image(ROOT / "sample_scans" / "mni152_labels_2mm.nii.gz")
    plane = fit_fov_to_shape(default_plane(image, spec, 0.0, tilt), (512, 512))
    value = plane_psnr(render_plane(image, plane, (512, 512)), source, (brain_region(labels), lgeom), plane)
    assert value >= 38.0, f"{spec}: {value:.1f} dB in the brain"
