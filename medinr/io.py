"""Reading and writing images with their geometry: NIfTI through nibabel, everything else through SimpleITK.

SimpleITK works in LPS; the conversion to the RAS+ affine of CONVENTIONS.md happens here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.outputs import public_path, write_failure
from medinr.resources import array_bytes, check_budget, format_bytes

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: The most a deflate (gzip/zlib) stream expands: a compressed file of n bytes holds at most ~1032 n.
_MAX_DEFLATE_RATIO = 1032


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def sitk_to_affine(image: "sitk.Image") -> np.ndarray:  # noqa: F821
    """4x4 RAS+ voxel-to-world affine of a SimpleITK image (2D images are embedded at z = 0).

    SimpleITK indexes voxels ``(x, y[, z])`` like nibabel's ``(i, j[, k])`` once the array is transposed.
    """
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    lps = np.eye(4)
    lps[:dim, :dim] = direction @ np.diag(spacing)
    lps[:dim, 3] = origin
    return _LPS @ lps


def affine_to_sitk(image: "sitk.Image", affine: np.ndarray) -> None:  # noqa: F821
    """Set origin, spacing and direction of a SimpleITK image from a 4x4 RAS+ affine."""
    dim = image.GetDimension()
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    lin = lps[:dim, :dim]
    spacing = np.linalg.norm(lps[:3, :dim], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:dim, 3]])
    image.SetDirection([float(d) for d in (lin / spacing).ravel()])


def array_to_sitk(array: np.ndarray, geometry: Geometry, vector: bool = False) -> "sitk.Image":  # noqa: F821
    """A SimpleITK image from an ``(i, j[, k])`` array (plus a trailing component axis if ``vector``)."""
    import SimpleITK as sitk

    nd = geometry.ndim
    arr = np.asarray(array)
    perm = tuple(range(nd))[::-1] + ((nd,) if vector else ())
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(perm)), isVector=vector)
    affine_to_sitk(image, _sitk_affine(geometry))
    return image


def _sitk_affine(geometry: Geometry) -> np.ndarray:
    """The 4x4 affine a SimpleITK image of ``geometry`` can hold.

    A 2D ITK image has a 2D origin and direction, so it cannot sit in an arbitrary plane of 3D space: it gets
    the image's in-plane world frame (:attr:`Geometry.affine_nd`), the frame in which medinr measures 2D
    positions and displacements. For slices in the x-y plane this is the original affine.
    """
    if geometry.ndim == 3:
        return geometry.affine
    nd = geometry.affine_nd
    out = np.eye(4)
    out[:2, :2] = nd[:2, :2]
    out[:2, 3] = nd[:2, 2]
    return out


def sitk_to_array(image: "sitk.Image") -> np.ndarray:  # noqa: F821
    """The ``(i, j[, k][, c])`` array of a SimpleITK image."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    nd = image.GetDimension()
    perm = tuple(range(nd))[::-1] + tuple(range(nd, arr.ndim))
    return arr.transpose(perm)


def load_image(path: str | os.PathLike, allow_vector: bool = False) -> tuple[np.ndarray, Geometry]:
    """Load a 2D or 3D image and its geometry.

    Parameters
    ----------
    path : path-like
        NIfTI (``.nii``, ``.nii.gz``), any format SimpleITK reads (MHA, NRRD, PNG, ...), a DICOM series
        folder, or a ``.npy`` array (1 mm voxels at the origin).
    allow_vector : bool
        Keep a trailing component axis (e.g. a displacement field) instead of refusing it.

    Returns
    -------
    array : ndarray
        float32 (complex64 for complex ``.npy``), indexed ``(i, j[, k])``.
    geometry : Geometry

    Raises
    ------
    MedinrError
        If the file is missing, unreadable, not 2D/3D, or holds non-finite values; if its header declares
        more voxels than the file can hold or than the memory budget allows (checked before reading them).

    Notes
    -----
    Warnings of nibabel and ITK while reading are held back: dropped when the file is refused (the error
    line says what is wrong), re-issued as Python warnings when it loads.
    """
    p = Path(path)
    if not p.exists():
        raise MedinrError(f"file not found: {p}")
    with _held_messages() as caught:
        array, affine = _read_any(p, allow_vector)
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise MedinrError(f"{p}: the header's voxel-to-world matrix (affine) holds NaN or infinite values")
    array = np.asarray(array)
    spatial = array.ndim - 1 if (allow_vector and array.ndim in (3, 4) and array.shape[-1] in (2, 3)) else array.ndim
    if spatial not in (2, 3):
        raise MedinrError(f"{p} has shape {array.shape}: expected a 2D or 3D image")
    array = array.astype(np.complex64 if np.iscomplexobj(array) else np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise MedinrError(f"{p} contains NaN or infinite values")
    try:
        geometry = Geometry(array.shape[:spatial], affine)
    except MedinrError as exc:
        raise MedinrError(f"{p}: {exc}") from None
    for message in caught:
        warnings.warn(f"{p.name}: {message}", UserWarning, stacklevel=2)
    return array, geometry


class _Held(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextmanager
def _held_messages() -> Iterator[list[str]]:
    """Collect the warnings and nibabel log lines of a read instead of printing them (see :func:`load_image`)."""
    held: list[str] = []
    loggers = [logging.getLogger(name) for name in ("nibabel", "nibabel.global")]  # the latter prints to stderr
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate = [_Held(held)], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield held
        held.extend(str(w.message) for w in caught)
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate


def _read_any(p: Path, allow_vector: bool) -> tuple[np.ndarray, np.ndarray]:
    """The raw array and affine of any supported file, after its header's size was checked."""
    try:
        if p.is_dir():
            return _load_dicom_series(p)
        if _is_nifti(p):
            return _read_nifti(p, allow_vector)
        if p.suffix.lower() == ".npy":
            return _read_npy(p), np.eye(4)
        return _read_sitk(p, allow_vector)
    except MedinrError:
        raise
    except Exception as exc:  # nibabel/SimpleITK/numpy raise many types for a corrupt file
        raise MedinrError(f"cannot read image {p}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The informative line of a reader's message (ITK's start with a source path and an object address)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Exception thrown in SimpleITK", "Reason: No such file"))
             and not re.search(r"\.(cxx|hxx|h):\d+:?$", ln)]
    lines = [re.sub(r"^(ITK ERROR|sitk::ERROR|ERROR):\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", ln) for ln in lines]
    return lines[0] if lines else type(exc).__name__


def _check_declared(p: Path, shape: tuple[int, ...], itemsize: int, data_bytes: int, compressed: bool) -> None:
    """Refuse a header that declares more voxels than the file can hold, or than the memory budget allows.

    An uncompressed file must hold every declared byte; a compressed one at most ~1032x its size (the
    deflate limit), so a 1 kB file cannot ask for gigabytes.
    """
    declared = array_bytes(shape, itemsize)
    room = data_bytes * _MAX_DEFLATE_RATIO + 65536 if compressed else data_bytes
    if declared > room:
        raise MedinrError(
            f"{p}: the header declares {'x'.join(map(str, shape))} voxels ({format_bytes(declared)}) but the file "
            f"holds {format_bytes(data_bytes)}{' compressed' if compressed else ''}: it is truncated or damaged"
        )
    check_budget(array_bytes(shape, itemsize + 12), f"reading {p} ({'x'.join(map(str, shape))} voxels)")


def _read_npy(p: Path) -> np.ndarray:
    """A ``.npy`` array, its header checked against the file size and the budget first; never unpickled."""
    fmt = np.lib.format
    with open(p, "rb") as f:
        version = fmt.read_magic(f)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read_header is not None:
            shape, _, dtype = read_header(f)
            if dtype.hasobject:
                raise MedinrError(f"{p} holds Python objects (a pickle), which medinr never loads")
            _check_declared(p, tuple(shape), dtype.itemsize, p.stat().st_size - f.tell(), compressed=False)
    return np.load(p, allow_pickle=False)


def _read_nifti(p: Path, allow_vector: bool) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(p))  # reads the header only
    shape = tuple(int(n) for n in img.shape)
    compressed = p.name.lower().endswith(".gz")
    offset = 0 if compressed else int(img.header.get("vox_offset", 0) or 0)
    _check_declared(p, shape, img.get_data_dtype().itemsize, p.stat().st_size - offset, compressed)
    array = np.asanyarray(img.dataobj)
    if not allow_vector:
        while array.ndim > 3 and array.shape[-1] == 1:
            array = array[..., 0]
    # a 2D slice stored as (X, Y, 1) is a 2D image
    if array.ndim == 3 and array.shape[2] == 1 and not allow_vector:
        array = array[:, :, 0]
    elif array.ndim == 5 and allow_vector and array.shape[3] == 1:
        array = array[:, :, :, 0, :]
    return array, img.affine


def _data_file_bytes(p: Path) -> int:
    """Bytes of an image file plus a detached data file its text header names (MetaImage, NRRD)."""
    total = p.stat().st_size
    if p.suffix.lower() in (".mhd", ".nhdr", ".mha", ".nrrd"):
        with open(p, "rb") as f:
            head = f.read(8192).decode("latin-1")
        m = re.search(r"^(?:ElementDataFile\s*=|data ?file:)\s*(.+?)\s*$", head, re.MULTILINE | re.IGNORECASE)
        if m and m.group(1).upper() != "LOCAL" and (p.parent / m.group(1)).is_file():
            total += (p.parent / m.group(1)).stat().st_size
    return total


def _read_sitk(p: Path, allow_vector: bool) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warnings would print before our error line
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    with _quiet_native_output():
        reader.ReadImageInformation()
        shape = tuple(int(n) for n in reader.GetSize()) + (int(reader.GetNumberOfComponents()),)
        itemsize = _sitk_itemsize(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
        _check_declared(p, shape, itemsize, _data_file_bytes(p), compressed=True)
        sitk_img = reader.Execute()
    array = sitk_to_array(sitk_img)
    if sitk_img.GetNumberOfComponentsPerPixel() > 1 and not allow_vector:
        if array.shape[-1] in (3, 4) and sitk_img.GetDimension() == 2:
            array = array[..., :3].mean(axis=-1)  # RGB(A) picture: use its luminance
    return array, sitk_to_affine(sitk_img)


def _sitk_itemsize(name: str) -> int:
    """Bytes per component of a SimpleITK pixel type from its name ('complex of 32-bit float' -> 8)."""
    m = re.search(r"(\d+)-bit", name)
    size = int(m.group(1)) // 8 if m else 8
    return 2 * size if "complex" in name else size


@contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Send what C++ readers print straight to the process's stdout/stderr (MetaIO does) to /dev/null."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real descriptors (an embedding host): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _load_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise MedinrError(f"{folder} is a folder but holds no DICOM series")
    reader.SetFileNames(files)
    img = reader.Execute()
    return sitk_to_array(img), sitk_to_affine(img)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    # the temporary name keeps the file's type suffix (writers choose the format by it) but stays short
    suffix = "".join(s for s in target.suffixes[-2:] if len(s) <= 8) or ".tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0][:40]}-", suffix=suffix, dir=target.parent)
    except OSError as exc:
        _raise_write_failure(exc, target)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes private (0600) files; a result should get the permissions of any new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except Exception as exc:
        _raise_write_failure(exc, target)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _raise_write_failure(exc: BaseException, target: Path) -> None:
    """Disk full, a quota, a file-size limit or a read-only folder while writing ``target``: one line."""
    if isinstance(exc, MedinrError):
        return
    failure = write_failure(exc)
    if failure is not None:
        raise MedinrError(f"{failure[0]} writing {public_path(target)}") from None


def save_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry, dtype: type = np.float32) -> Path:
    """Write an ``(i, j[, k])`` array as NIfTI (or any SimpleITK format) with the geometry's affine.

    The file is written under a temporary name and renamed when complete. A trailing component axis
    (a vector image) is written as NIfTI intent vector.
    """
    target = Path(path)
    array = np.asarray(array).astype(dtype, copy=False)
    with atomic_path(target) as tmp:
        if _is_nifti(target):
            data = array
            if data.ndim == geometry.ndim + 1:  # vector image: NIfTI stores components on the 5th axis
                data = data.reshape(geometry.shape + (1,) * (3 - geometry.ndim) + (1, data.shape[-1]))
            img = nib.Nifti1Image(data, geometry.affine)
            img.header.set_xyzt_units("mm", "sec")
            if data.ndim == 5:
                img.header.set_intent("vector")
            img.header.set_qform(geometry.affine, code=1)
            img.header.set_sform(geometry.affine, code=1)
            nib.save(img, str(tmp))
        else:
            import SimpleITK as sitk

            vector = array.ndim == geometry.ndim + 1
            sitk.WriteImage(array_to_sitk(array, geometry, vector=vector), str(tmp))
    return target


def take_slice(array: np.ndarray, geometry: Geometry, index: int, axis: int = 2) -> tuple[np.ndarray, Geometry]:
    """Extract a 2D slice of a 3D image with a 4x4 affine that keeps it at its world position."""
    if geometry.ndim != 3:
        raise MedinrError("--slice needs a 3D image")
    if axis not in (0, 1, 2):
        raise MedinrError(f"--axis must be 0, 1 or 2, got {axis}")
    n = geometry.shape[axis]
    if not -n <= index < n:
        raise MedinrError(f"slice {index} is outside axis {axis} of size {n}")
    index %= n
    keep = [a for a in range(3) if a != axis]
    # voxel (u, v) of the slice is voxel (.., index, ..) of the volume
    select = np.zeros((4, 4))
    select[keep[0], 0] = 1.0
    select[keep[1], 1] = 1.0
    select[axis, 2] = 1.0
    select[axis, 3] = index
    select[3, 3] = 1.0
    return np.take(array, index, axis=axis), Geometry([geometry.shape[a] for a in keep], geometry.affine @ select)
