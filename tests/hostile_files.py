"""Small hostile inputs for the safety tests: images of odd sizes, checkpoints with rewritten headers, and a
runner that returns the CLI's exit status and stderr lines."""

from __future__ import annotations

import gzip
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medinr.checkpoint import save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.geometry import Geometry
from medinr.io import save_image
from medinr.models import build_model
from pipelines.cli import main


def write_image(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    """A smooth random image (values 0..1, 1.5 mm voxels) with some structure to fit."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    image = np.exp(-4 * sum(g**2 for g in grids)) + 0.05 * rng.random(shape)
    save_image(path, image.astype(np.float32), Geometry(shape, np.diag([1.5, 1.5, 1.5, 1.0])))
    return path


def write_checkpoint(path: Path, ndim: int = 3, family: str = "siren", **options: Any) -> Path:
    """A tiny checkpoint of an intensity image on a 12^ndim grid."""
    torch.manual_seed(0)
    opts = {"hidden": 16, "layers": 2} if family == "siren" else {}
    model = build_model(family, ndim, 1, **{**opts, **options})
    geometry = Geometry((12,) * ndim, np.diag([2.0, 2.0, 2.0, 1.0]))
    return save_checkpoint(path, ContinuousImage(model, geometry, {"kind": "intensity", "scale": 3.0}))


def read_header(path: Path) -> tuple[dict, bytes]:
    """The safetensors JSON header of ``path`` and the tensor bytes after it."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path: Path, header: dict, data: bytes) -> Path:
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def rewrite_metadata(src: Path, dst: Path, change: Callable[[dict], Any] | str) -> Path:
    """A copy of checkpoint ``src`` whose medinr metadata was changed in place by ``change`` (or replaced by text)."""
    header, data = read_header(src)
    if isinstance(change, str):
        header["__metadata__"]["medinr"] = change
    else:
        meta = json.loads(header["__metadata__"]["medinr"])
        change(meta)
        header["__metadata__"]["medinr"] = json.dumps(meta)
    return write_header(dst, header, data)


def nifti_claiming(path: Path, shape: tuple[int, ...], dtype: type = np.float32, payload: int = 64) -> Path:
    """A NIfTI whose header declares ``shape`` but whose file holds only ``payload`` bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\0" * 4 + b"\0" * payload
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)
    return path


def nifti_with_pixdim(path: Path, data: np.ndarray, index: int, value: float) -> Path:
    """An uncompressed NIfTI of ``data`` whose ``pixdim[index]`` was overwritten with ``value`` in the raw bytes."""
    img = nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4))
    img.header.set_qform(np.eye(4), code=1)
    img.header.set_sform(None, code=0)
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 76 + 4 * index, value)  # pixdim: 8 float32 at byte 76
    path.write_bytes(bytes(raw))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, list[str], float]:
    """``main(args)`` in this process: (exit status, stderr lines, seconds); stdout is discarded."""
    capsys.readouterr()
    start = time.perf_counter()
    rc = main([str(a) for a in args])
    seconds = time.perf_counter() - start
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err, seconds


def assert_refused(rc: int, err: list[str], contains: str) -> str:
    """Exit 2 and exactly one ``medinr: error:`` line (no traceback, no warnings before it) holding ``contains``."""
    assert rc == 2, (rc, err)
    assert len(err) == 1, err
    assert err[0].startswith("medinr: error: ") and "Traceback" not in err[0], err
    assert contains in err[0], err[0]
    return err[0]


def entries(folder: Path) -> set[str]:
    """Every path below ``folder`` (to compare before and after a refused run)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}
