"""Reading and writing images with their geometry: NIfTI through nibabel, everything else through SimpleITK.

SimpleITK works in LPS; the conversion to the RAS+ affine of CONVENTIONS.md happens here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from medinr.errors import MedinrError
from medinr.filecheck import (
    MAX_DEFLATE_RATIO,
    check_declared_size,
    check_geometry,
    check_hdf5_links,
    check_numeric_dtype,
    check_values,
    detached_data_files,
    spatial_shape,
)
from medinr.geometry import Geometry
from medinr.gzipfile import open_gzip_writer
from medinr.outputs import public_path, write_failure
from medinr.resources import format_bytes

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def sitk_to_affine(image: "sitk.Image") -> np.ndarray:  # noqa: F821
    """4x4 RAS+ voxel-to-world affine of a SimpleITK image (2D images are embedded at z = 0).

    SimpleITK indexes voxels ``(x, y[, z])`` like nibabel's ``(i, j[, k])`` once the array is transposed.
    """
    return _lps_to_ras(image.GetDimension(), image.GetDirection(), image.GetSpacing(), image.GetOrigin())


def _lps_to_ras(dim: int, direction: Sequence[float], spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """The 4x4 RAS+ affine of an ITK direction, spacing and origin (LPS); also from a header before reading."""
    with np.errstate(all="ignore"):
        dim = min(int(dim), 3)  # a 4D ITK image is refused by its shape; its first three axes still give a matrix
        n = int(round(len(direction) ** 0.5))
        direction = np.asarray(direction, dtype=np.float64).reshape(n, n)[:dim, :dim]
        lps = np.eye(4)
        lps[:dim, :dim] = direction @ np.diag(np.asarray(spacing, dtype=np.float64)[:dim])
        lps[:dim, 3] = np.asarray(origin, dtype=np.float64)[:dim]
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


def array_to_sitk(array: np.ndarray, geometry: Geometry, vector: bool = False,
                  itk_order: bool = False) -> "sitk.Image":  # noqa: F821
    """A SimpleITK image from an ``(i, j[, k])`` array (plus a trailing component axis if ``vector``);
    ``itk_order``: the array is in SimpleITK's own axis order already, ``([k,] j, i)`` (then no copy is made here)."""
    import SimpleITK as sitk

    nd = geometry.ndim
    arr = np.asarray(array)
    if not itk_order:
        arr = np.ascontiguousarray(arr.transpose(tuple(range(nd))[::-1] + ((nd,) if vector else ())))
    image = sitk.GetImageFromArray(arr, isVector=vector)
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
        float32 (complex64 for complex data), indexed ``(i, j[, k])``.
    geometry : Geometry

    Raises
    ------
    MedinrError
        If the file is missing or unreadable; if its header declares a voxel type that is not numeric, a shape
        that is not 2D or 3D, more voxels than the file can hold or than the memory budget allows, a geometry
        outside :func:`medinr.filecheck.check_geometry`'s bounds, or data in another file (all checked from the
        header, before any voxel is read); if its values are not finite or beyond float32.

    Notes
    -----
    Warnings of nibabel and ITK while reading are held back: dropped when the file is refused (the error
    line says what is wrong), re-issued as Python warnings when it loads. A ``.nii.gz`` is read to its end
    once first, so that a damaged gzip stream (a wrong CRC or length) is refused rather than half-read.
    """
    p = Path(path)
    if not os.path.exists(p):
        raise MedinrError(f"file not found: {p}")
    with _held_messages() as caught, np.errstate(all="ignore"):
        array, affine, note = _read_any(p, allow_vector)
        array = np.asarray(array)
        vector = allow_vector and array.ndim in (3, 4) and array.shape[-1] in (2, 3)
        spatial = array.ndim - 1 if vector else array.ndim
        if spatial not in (2, 3):
            raise MedinrError(f"{p} has shape {array.shape}: expected a 2D or 3D image")
        affine = check_geometry(p, affine, spatial)
        check_values(p, array, note)
        array = array.astype(np.complex64 if np.iscomplexobj(array) else np.float32, copy=False)
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


def _read_any(p: Path, allow_vector: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """The raw array, affine and a note for value errors of any supported file, its header checked first."""
    try:
        if p.is_dir():
            return (*_load_dicom_series(p), "")
        if _is_nifti(p):
            return _read_nifti(p, allow_vector)
        if p.suffix.lower() == ".npy":
            return _read_npy(p, allow_vector), np.eye(4), ""
        return (*_read_sitk(p, allow_vector), "")
    except MedinrError:
        raise
    except Exception as exc:  # nibabel/SimpleITK/numpy raise many types for a corrupt file
        raise MedinrError(f"cannot read image {p}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The informative line of a reader's message (ITK's start with a source path and an object address; NRRD's
    reason is the deepest ``[nrrd]`` line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Exception thrown in SimpleITK", "Reason: No such file"))
             and not re.search(r"\.(cxx|hxx|h):\d+:?$", ln)]
    lines = [re.sub(r"^(itk::ERROR|ITK ERROR|sitk::ERROR|ERROR):\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", ln)
             for ln in lines]
    lines = [re.sub(r"\(0x[0-9a-fA-F]+\)", "", ln) for ln in lines]
    if not lines:
        return type(exc).__name__
    details = [re.sub(r"^\[\w+\]\s*\w+:\s*", "", ln) for ln in lines[1:] if ln.startswith("[")]
    details = [d for d in details if d and not d.startswith("trouble") or "parsing" in d]
    if details:
        best = next((d for d in details if "parsing" in d), details[-1])
        return f"{re.sub(r'^(ReadImageInformation|Read): ', '', lines[0]).rstrip(':')}: {best}"
    return lines[0]


def _read_npy(p: Path, allow_vector: bool) -> np.ndarray:
    """A ``.npy`` array, its header checked (type, dimensions, size) first; never unpickled."""
    fmt = np.lib.format
    with open(p, "rb") as f:
        try:
            version = fmt.read_magic(f)
        except ValueError:
            raise MedinrError(f"{p} is not a NumPy .npy file") from None
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read_header is None:
            raise MedinrError(f"{p}: .npy format version {version} is not supported")
        shape, _, dtype = read_header(f, max_header_size=1 << 16)
        if dtype.hasobject:
            raise MedinrError(f"{p} holds Python objects (a pickle), which medinr never loads")
        check_numeric_dtype(p, dtype)
        spatial_shape(p, shape, allow_vector)
        check_declared_size(p, tuple(shape), dtype.itemsize, p.stat().st_size - f.tell(), compressed=False)
    return np.load(p, allow_pickle=False)


def _read_nifti(p: Path, allow_vector: bool) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        img = nib.load(str(p))  # reads the header only
    except Exception:
        if p.name.lower().endswith(".gz"):
            _verify_gzip(p, limit=1 << 26)  # a small damaged .gz fails in nibabel's header read: say why
        raise
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    dtype = img.get_data_dtype()
    check_numeric_dtype(p, dtype)
    spatial, _ = spatial_shape(p, shape, allow_vector)
    _check_nifti_zooms(p, header, len(spatial))
    check_geometry(p, img.affine, len(spatial))
    compressed = p.name.lower().endswith(".gz")
    offset = 0 if compressed else int(header.get("vox_offset", 0) or 0)
    check_declared_size(p, shape, dtype.itemsize, p.stat().st_size - offset, compressed)
    if compressed:
        _verify_gzip(p)
    array = np.asanyarray(img.dataobj)
    if not allow_vector:
        while array.ndim > 3 and array.shape[-1] == 1:
            array = array[..., 0]
    # a 2D slice stored as (X, Y, 1) is a 2D image
    if array.ndim == 3 and array.shape[2] == 1 and not allow_vector:
        array = array[:, :, 0]
    elif array.ndim == 5 and allow_vector and array.shape[3] == 1:
        array = array[:, :, :, 0, :]
    slope, inter = (float(v) for v in header.get_slope_inter()) if None not in header.get_slope_inter() else (1, 0)
    note = f" (after scaling by scl_slope {slope:g}, scl_inter {inter:g})" if (slope, inter) != (1, 0) else ""
    return array, img.affine, note


def _check_nifti_zooms(p: Path, header: nib.Nifti1Header, ndim: int) -> None:
    """Refuse a voxel size of 0 where nibabel would silently make it 1 mm (a header without sform)."""
    if int(header.get("sform_code", 0) or 0) > 0:
        return
    with nib.openers.ImageOpener(p) as f:  # nibabel's loaded header already has 0 replaced by 1
        raw = type(header).from_fileobj(f, check=False)
    zooms = np.asarray(raw["pixdim"][1 : ndim + 1], dtype=np.float64)
    if np.any(zooms == 0):
        raise MedinrError(f"{p}: the header gives a voxel size of 0 (pixdim {zooms.tolist()}) and no sform: "
                          "the image has no geometry medinr can use; set the voxel sizes in the header")


def _verify_gzip(p: Path, limit: int | None = None) -> None:
    """Read a gzip file to its end (or ``limit`` bytes) in 1 MiB pieces: a wrong CRC, a wrong length or a cut
    stream is refused."""
    import gzip
    import zlib

    done = 0
    try:
        with gzip.open(p, "rb") as f:
            while (limit is None or done < limit) and (piece := len(f.read(1 << 20))):
                done += piece
    except (OSError, EOFError, zlib.error) as exc:
        reason = re.sub(r"\s*0x[0-9a-fA-F]+ != 0x[0-9a-fA-F]+", "", str(exc))  # "CRC check failed 0x.. != 0x.."
        raise MedinrError(f"cannot read image {p}: its gzip data are damaged ({reason})") from None


def _read_sitk(p: Path, allow_vector: bool) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warnings would print before our error line
    detached = detached_data_files(p)
    if p.suffix.lower() in (".h5", ".hdf5", ".he5"):
        _check_hdf5_image(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    with quiet_native_output():
        reader.ReadImageInformation()
        _check_sitk_header(p, reader, allow_vector, sum(f.stat().st_size for f in detached))
        sitk_img = reader.Execute()
    array = sitk_to_array(sitk_img)
    if sitk_img.GetNumberOfComponentsPerPixel() > 1 and not allow_vector:
        array = array[..., :3].mean(axis=-1)  # RGB(A) picture: use its luminance
    return array, sitk_to_affine(sitk_img)


def _check_sitk_header(p: Path, reader: "sitk.ImageFileReader", allow_vector: bool, detached_bytes: int) -> None:  # noqa: F821
    """Type, dimensions, geometry and size of a SimpleITK file from its header, before its voxels are read."""
    import SimpleITK as sitk

    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    components = int(reader.GetNumberOfComponents())
    size = tuple(int(n) for n in reader.GetSize())
    if components > 1 and not (allow_vector and components in (2, 3)):
        if not (len(size) == 2 and components in (3, 4)):  # a 2D RGB(A) picture is read as its luminance
            raise MedinrError(f"{p} holds {components} values per voxel ({pixel}): expected a grey-level image")
    spatial, _ = spatial_shape(p, size + ((components,) if allow_vector and components > 1 else ()), allow_vector)
    dim = reader.GetDimension()
    check_geometry(p, _lps_to_ras(dim, reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin()),
                   len(spatial))
    itemsize = _sitk_itemsize(pixel)
    check_declared_size(p, size + (components,), itemsize, p.stat().st_size + detached_bytes, compressed=True,
                        working_bytes_per_voxel=itemsize + 12)  # ITK's buffer and numpy's copy of it


def _check_hdf5_image(p: Path) -> None:
    import h5py

    with h5py.File(p, "r") as f:
        check_hdf5_links(p, f)


def _sitk_itemsize(name: str) -> int:
    """Bytes per component of a SimpleITK pixel type from its name ('complex of 32-bit float' -> 8)."""
    m = re.search(r"(\d+)-bit", name)
    size = int(m.group(1)) // 8 if m else 8
    return 2 * size if "complex" in name else size


@contextmanager
def quiet_native_output() -> Iterator[None]:
    """Send what C++ readers and writers print straight to the process's stdout/stderr (MetaIO, niftilib) to
    /dev/null."""
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


#: DICOM transfer syntaxes whose pixel data are stored as they are (each declared byte is in the file).
_DICOM_RAW = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_DICOM_DEFLATED = "1.2.840.10008.1.2.1.99"


def _load_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's warnings name a source file and an address
    reader = sitk.ImageSeriesReader()
    with quiet_native_output():
        files = reader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise MedinrError(f"{folder} is a folder but holds no DICOM series")
    size, itemsize = _check_dicom_headers(folder, files)
    check_declared_size(folder, (*size, len(files)), itemsize, sum(os.path.getsize(f) for f in files),
                        compressed=True, working_bytes_per_voxel=itemsize + 12)
    reader.SetFileNames(files)
    with quiet_native_output():
        img = reader.Execute()
    return sitk_to_array(img), sitk_to_affine(img)


def _check_dicom_headers(folder: Path, files: Sequence[str]) -> tuple[tuple[int, int], int]:
    """Every slice's header before any pixel is read: one size, a non-zero PixelSpacing, and (for raw transfer
    syntaxes) as many pixel bytes in the file as rows x columns declare. Returns the slice size and item size."""
    import SimpleITK as sitk

    sizes = set()
    itemsize = 2
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        with quiet_native_output():
            reader.ReadImageInformation()
        text = reader.GetMetaData("0028|0030").strip() if reader.HasMetaDataKey("0028|0030") else ""
        spacing = [_dicom_number(v) for v in text.split("\\") if v.strip()]
        if spacing and not all(s > 0 for s in spacing):
            raise MedinrError(f"{name}: PixelSpacing is {text!r}: a voxel size of 0 or less; "
                              "the series has no geometry medinr can use")
        size = tuple(int(n) for n in reader.GetSize()[:2])
        itemsize = _sitk_itemsize(sitk.GetPixelIDValueAsString(reader.GetPixelID())) * reader.GetNumberOfComponents()
        declared = size[0] * size[1] * itemsize
        syntax = _dicom_transfer_syntax(name)
        room = os.path.getsize(name) * (MAX_DEFLATE_RATIO if syntax == _DICOM_DEFLATED else 1)
        if syntax in _DICOM_RAW | {_DICOM_DEFLATED} and declared > room:
            raise MedinrError(f"{name}: the header declares {size[0]}x{size[1]} pixels ({format_bytes(declared)}) "
                              f"but the file holds {format_bytes(os.path.getsize(name))}: it is truncated or damaged")
        sizes.add(size)
    if len(sizes) > 1:
        raise MedinrError(f"{folder}: the slices of the series differ in size ({sorted(sizes)})")
    return sizes.pop(), itemsize


def _dicom_transfer_syntax(path: str) -> str:
    """The transfer syntax UID of a DICOM file's meta header (group 0002, explicit VR little endian); files
    without one (no ``DICM`` preamble) are implicit VR little endian, stored raw."""
    with open(path, "rb") as f:
        head = f.read(1 << 14)
    if head[128:132] != b"DICM":
        return "1.2.840.10008.1.2"
    pos = 132
    while pos + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, pos)
        if group != 2:
            break
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length, pos = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        else:
            length, pos = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if element == 0x0010:
            return head[pos : pos + length].decode("ascii", "replace").rstrip("\0 ")
        pos += length
    return ""


def _dicom_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


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
    (a vector image) is written as NIfTI intent vector. A geometry that :func:`load_image` would refuse
    (voxel sizes or origin out of range) is refused here too, before anything is written.
    """
    target = Path(path)
    check_geometry(public_path(target), geometry.affine, geometry.ndim)  # never write what load_image refuses
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
            if target.name.lower().endswith(".gz"):
                with open_gzip_writer(tmp) as f:  # ISA-L: several times nibabel's zlib (medinr.gzipfile)
                    img.to_stream(f)
            else:
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
