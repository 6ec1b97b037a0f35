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


# -- issue 20: files whose headers declare what their data cannot be ---------------------------------------------
def gzip_with_header(path: Path, header: bytes, payload: bytes) -> Path:
    """A gzip file of ``header`` followed by ``payload``."""
    path.write_bytes(gzip.compress(header + payload, compresslevel=1))
    return path


def nifti_declaring(path: Path, shape: tuple[int, ...], dtype: Any = np.float32, compressed_bytes: int = 0,
                    nifti2: bool = False, **fields: Any) -> Path:
    """A (.nii.gz) NIfTI whose header declares ``shape`` and ``dtype``, with random bytes after it so that the
    compressed file has about ``compressed_bytes`` (room for what it declares under the deflate limit);
    ``fields`` overwrite header fields (e.g. ``pixdim``)."""
    header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header)()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    for name, value in fields.items():
        header[name] = value
    header["vox_offset"] = len(header.binaryblock) + 4
    blob = header.binaryblock + b"\0" * 4
    payload = np.random.default_rng(0).bytes(compressed_bytes)
    if path.name.endswith(".gz"):
        return gzip_with_header(path, blob, payload)
    path.write_bytes(blob + payload)
    return path


def zero_deflate(nbytes: int) -> bytes:
    """A zlib stream of ``nbytes`` zeros (about nbytes / 1000 bytes), made quickly."""
    import zlib

    z = zlib.compressobj(1)
    block = bytes(1 << 24)
    parts = [z.compress(block) for _ in range(nbytes // len(block))]
    parts.append(z.compress(bytes(nbytes % len(block))))
    return b"".join(parts) + z.flush()


def mha_compressed_zeros(path: Path, shape: tuple[int, ...]) -> Path:
    """A compressed MetaImage of float32 zeros: a small file that expands to ``prod(shape) * 4`` bytes."""
    data = zero_deflate(int(np.prod(shape)) * 4)
    head = (f"ObjectType = Image\nNDims = {len(shape)}\nDimSize = {' '.join(map(str, shape))}\n"
            f"ElementType = MET_FLOAT\nCompressedData = True\nCompressedDataSize = {len(data)}\n"
            "ElementDataFile = LOCAL\n")
    path.write_bytes(head.encode() + data)
    return path


def dicom_series(folder: Path, slices: int = 3, shape: tuple[int, int] = (16, 16), spacing: float = 0.8) -> Path:
    """A small DICOM series (int16, explicit slice positions) written by SimpleITK into ``folder``."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(slices):
        img = sitk.GetImageFromArray((np.arange(shape[0] * shape[1]).reshape(shape) % 200 + k).astype(np.int16))
        img.SetSpacing((spacing, spacing))
        tags = {"0020|0032": f"0\\0\\{2.0 * k}", "0020|0013": str(k + 1), "0008|0060": "MR",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.9.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.9.2",
                "0008|0018": f"1.2.826.0.1.3680043.2.1125.9.3.{k}", "0020|0037": "1\\0\\0\\0\\1\\0"}
        for key, value in tags.items():
            img.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(img)
    return folder


def patch_dicom(path: Path, group: int, element: int, value: bytes) -> Path:
    """Overwrite the value of an element (implicit VR little endian data set, as SimpleITK writes) in place;
    ``value`` must have the element's length."""
    raw = bytearray(path.read_bytes())
    tag = struct.pack("<HHI", group, element, len(value))
    at = raw.find(tag, 132 + 12)
    assert at > 0, (group, element)
    raw[at + 8 : at + 8 + len(value)] = value
    path.write_bytes(bytes(raw))
    return path
