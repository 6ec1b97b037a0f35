"""Every pipeline end to end with ``--device cuda``: fit, reconstruct, register, render (skipped without CUDA).

The outputs must be the same kind of result as on the CPU: written files, finite values, and the device recorded
in metrics.json. Small inputs and few steps: this checks that no code path is CPU-only, not the quality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medinr.geometry import Geometry
from medinr.io import load_image, save_image
from pipelines.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture()
def slice_path(tmp_path, coronal_64):
    path = tmp_path / "slice.nii.gz"
    save_image(path, coronal_64, Geometry(coronal_64.shape))
    return path


@pytest.fixture()
def volume_path(tmp_path):
    volume, geometry = load_image("sample_scans/mni152_t1_2mm.nii.gz")
    start = [n // 2 - 16 for n in volume.shape]
    crop = np.ascontiguousarray(volume[tuple(slice(s, s + 32) for s in start)], dtype=np.float32)
    affine = geometry.affine.copy()
    affine[:3, 3] = geometry.voxel_to_world(np.asarray(start, dtype=np.float64))
    path = tmp_path / "crop.nii.gz"
    save_image(path, crop, Geometry(crop.shape, affine))
    return path


@pytest.mark.parametrize("model", ["mrgrid", "hashgrid", "kan", "siren"])
def test_fit_on_cuda(tmp_path, slice_path, model):
    out = tmp_path / model
    assert main(["fit", str(slice_path), "--model", model, "--steps", "40", "--device", "cuda", "--out", str(out),
                 "--quiet"]) == 0
    metrics = _metrics(out)
    assert metrics["device"].startswith("cuda") and metrics["metrics"]["psnr"] > 20


def test_fit_volume_and_render_on_cuda(tmp_path, volume_path):
    out = tmp_path / "fit3d"
    assert main(["fit", str(volume_path), "--steps", "40", "--device", "cuda", "--out", str(out), "--quiet"]) == 0
    assert _metrics(out)["device"].startswith("cuda")
    png = tmp_path / "plane.png"
    assert main(["render", str(out / "model.inr"), "--plane", "1,1,0", "--zoom", "2", "--device", "cuda",
                 "--out", str(png), "--quiet"]) == 0
    assert png.stat().st_size > 1000


def test_reconstruct_on_cuda(tmp_path, slice_path):
    out = tmp_path / "recon"
    assert main(["reconstruct", str(slice_path), "--accel", "4", "--coils", "4", "--snr", "30", "--device", "cuda",
                 "--out", str(out), "--quiet"]) == 0
    metrics = _metrics(out)
    assert metrics["device"].startswith("cuda") and np.isfinite(metrics["methods"]["inr"]["psnr"])


def test_register_on_cuda(tmp_path, volume_path):
    out = tmp_path / "register"
    assert main(["register", str(volume_path), str(volume_path), "--device", "cuda", "--out", str(out),
                 "--quiet"]) == 0
    assert '"cuda' in json.dumps(_metrics(out))
    assert (out / "displacement.nii.gz").exists()


def test_the_kans_compiled_lattice_pass_on_cuda(monkeypatch):
    """The KAN's compiled training pass over a lattice (inductor's GPU code, or the eager layers where it cannot
    compile) gives the eager layers' values and gradients on the GPU."""
    from medinr.models import build_model
    from medinr.models import kan as kan_module

    monkeypatch.setattr(kan_module, "_POINTS_PASS", None)
    torch.manual_seed(0)
    model = build_model("kan", 2, 2).cuda()
    shape = (160, 160)  # three chunks and an eager remainder
    weights = torch.randn(*shape, 2, device="cuda")
    results = []
    for compiled in (False, True):
        model.compile_lattice = compiled
        model.zero_grad()
        out = model.forward_lattice(shape)
        (out * weights).sum().backward()
        results.append([out.detach(), *(p.grad.clone() for p in model.parameters())])
    for eager, fast in zip(*results):
        assert float((eager - fast).abs().max()) <= 1e-4 * max(1.0, float(eager.abs().max()))
