"""``medinr info`` on what the other commands read: a checkpoint, an image or k-space, each described from the file
(grid in the world, values or sampling), and refused with one line where the commands would refuse it."""

import json
import shutil

import numpy as np
import pytest

from medinr.checkpoint import save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.geometry import Geometry
from medinr.io import save_image
from medinr.models import build_model
from pipelines.cli import main


def _info(capsys, *args) -> tuple[int, str, str]:
    rc = main(["info", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_an_image_is_described_by_its_grid_in_the_world_and_its_values(tmp_path, capsys):
    # LPS-like axes (x and y flipped), 0.9 x 0.9 x 3 mm voxels, values in scanner units
    affine = np.diag([-0.9, -0.9, 3.0, 1.0])
    affine[:3, 3] = [30.0, 20.0, -5.0]
    image = np.zeros((40, 30, 6), np.float32)
    image[10:30, 5:25, 1:5] = np.linspace(100.0, 900.0, 20 * 20 * 4).reshape(20, 20, 4)
    path = save_image(tmp_path / "scan.nii.gz", image, Geometry(image.shape, affine))
    rc, out, err = _info(capsys, path)
    assert rc == 0 and not err
    assert "real image" in out
    assert "shape (40, 30, 6), spacing (0.9, 0.9, 3) mm, field of view 36 x 27 x 18 mm, axes towards LPS" in out
    assert "min 0, max 900" in out and f"{100 * (1 - 1600 / 7200):.1f} % zero" in out
    rc, out, _ = _info(capsys, path, "--json")
    record = json.loads(out)
    assert rc == 0 and record["kind"] == "image" and record["geometry"]["orientation"] == "LPS"
    np.testing.assert_allclose(record["geometry"]["affine"], affine, atol=1e-5)
    assert record["values"]["max"] == pytest.approx(900.0)


def test_kspace_is_described_by_its_coils_grid_and_sampling(samples, tmp_path, capsys):
    rc, out, err = _info(capsys, samples / "gre_2coil_kspace.npy")  # measured, fully sampled, with a sidecar
    assert rc == 0 and not err
    assert "cartesian k-space, 2 coils" in out and "spacing (1.25, 1.25) mm, field of view 200 x 200 mm" in out
    assert "25600 of 25600 grid samples (1.00x" in out and "fully sampled inside 0:160 x 0:160" in out
    # the same data with 3 of every 4 phase lines dropped outside 16 central ones: measured undersampling
    kspace = np.load(samples / "gre_2coil_kspace.npy")
    keep = np.zeros(160, bool)
    keep[::4] = keep[72:88] = True
    np.save(tmp_path / "under.npy", kspace * keep)
    shutil.copy(samples / "gre_2coil_kspace.json", tmp_path / "under.json")
    rc, out, _ = _info(capsys, tmp_path / "under.npy")
    acquired = int(keep.sum()) * 160
    assert rc == 0 and f"{acquired} of 25600 grid samples ({25600 / acquired:.2f}x" in out
    assert "undersampled (reconstruct keeps this sampling)" in out
    record = json.loads(_info(capsys, tmp_path / "under.npy", "--json")[1])
    assert record["fully_sampled_box"] is None and record["acceleration"] == pytest.approx(25600 / acquired)


def test_non_cartesian_kspace_takes_its_grid_from_the_file_or_the_options(tmp_path, capsys):
    from medinr.mri.trajectories import golden_angle_radial

    traj = golden_angle_radial(12, (32, 32))
    kspace = np.ones((3, *traj.shape[:2]), np.complex64)
    np.savez(tmp_path / "radial.npz", kspace=kspace, traj=traj)
    rc, _, err = _info(capsys, tmp_path / "radial.npz")
    assert rc == 2 and "--matrix and --fov" in err and len(err.strip().splitlines()) == 1
    rc, out, _ = _info(capsys, tmp_path / "radial.npz", "--matrix", "32,32", "--fov", "192,192")
    assert rc == 0 and "3 coils" in out and f"12 readouts x {traj.shape[1]} samples" in out
    assert "spacing (6, 6) mm" in out
    rc, _, err = _info(capsys, tmp_path / "radial.npz".replace("npz", "nii.gz"), "--matrix", "32,32")
    assert rc == 2 and "non-Cartesian .npz" in err


def test_a_checkpoint_is_recognised_by_its_content_under_any_name(tmp_path, capsys):
    model = build_model("siren", 2, 1, hidden=8, layers=1)
    ckpt = save_checkpoint(tmp_path / "model.inr", ContinuousImage(model, Geometry((8, 8)), {"kind": "intensity"}))
    renamed = tmp_path / "model.safetensors"
    shutil.copy(ckpt, renamed)
    state = model.state_dict()
    count = f"{sum(t.numel() for t in state.values()):,} parameters in {len(state)} tensors"
    for path in (ckpt, renamed):
        rc, out, _ = _info(capsys, path)
        assert rc == 0 and "format:    medinr-inr" in out and "model:     siren" in out and count in out


@pytest.mark.parametrize("name, content, message", [
    ("bad.nii.gz", b"garbage", "its gzip data are damaged"),
    ("text.npy", None, "holds text"),
    ("bad.inr", b"garbage!garbage!", "not a medinr checkpoint"),
    ("none.nii.gz", False, "file not found"),
])
def test_a_file_the_commands_refuse_is_one_error_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is None:
        np.save(path, np.array(["a", "b"]))
    elif content is not False:
        path.write_bytes(content)
    rc, out, err = _info(capsys, path)
    lines = err.strip().splitlines()
    assert rc == 2 and not out and len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_describing_an_image_or_kspace_imports_no_torch(samples):
    """A file the user is about to process is described in well under a second: no torch (nor matplotlib)."""
    import subprocess
    import sys
    from pathlib import Path

    from test_apps import PROBE

    root = Path(__file__).resolve().parents[1]
    for path in (samples / "mni152_t1_2mm.nii.gz", samples / "gre_2coil_kspace.npy"):
        proc = subprocess.run([sys.executable, "-c", PROBE, "info", str(path)], cwd=root, capture_output=True,
                              text=True, timeout=120)
        probe = json.loads([s for s in proc.stdout.splitlines() if s.startswith("PROBE ")][-1][len("PROBE "):])
        assert probe["code"] == 0 and "torch" not in probe["heavy"] and "matplotlib" not in probe["heavy"], probe
