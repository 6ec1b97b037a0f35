"""What an input file may declare, checked from its header before any voxel is read.

Every reader (NIfTI, SimpleITK formats, DICOM, ``.npy``, HDF5, k-space) asks these questions first, so that a
hostile or damaged file is refused with one line before it can allocate, read another file or write a result:

- **numbers only**: voxel types must be bool, integer, float or complex (no RGB records, text, dates, objects);
- **2D or 3D**: the declared dimensionality, before the data are decompressed;
- **size**: the declared bytes must fit in the file (a compressed file holds at most ~1032 times its size) and
  in the memory budget (:mod:`medinr.resources`);
- **geometry**: voxel sizes between :data:`MIN_VOXEL_MM` and :data:`MAX_VOXEL_MM`, an origin within
  :data:`MAX_ORIGIN_MM`, a finite affine; also checked before writing (medinr never writes what it would refuse);
- **no data from elsewhere**: a text header's detached data file (NRRD ``data file``, MetaImage
  ``ElementDataFile``), an HDF5 external link, virtual dataset or external storage is refused; a detached data
  file *beside* its header may be allowed (``--allow-detached-data``, :func:`detached_data_allowed` or
  ``MEDINR_ALLOW_DETACHED_DATA=1``).

Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medinr import jsonsafe
from medinr.errors import MedinrError
from medinr.resources import array_bytes, check_budget, format_bytes

#: The most a deflate (gzip/zlib) stream expands: a compressed file of n bytes holds at most ~1032 n.
MAX_DEFLATE_RATIO = 1032
#: Voxel sizes medinr accepts, millimetres (1 nm .. 1 km): beyond them a geometry is damage, not anatomy, and
#: world coordinates would overflow float32 in a network or in a written NIfTI header.
MIN_VOXEL_MM, MAX_VOXEL_MM = 1e-6, 1e6
#: Largest distance of an image origin from the world origin, millimetres.
MAX_ORIGIN_MM = 1e9
#: Largest float32 value: a float64 or scaled image beyond it cannot be held as medinr's float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_KIND_WORDS = {"U": "text", "S": "bytes", "M": "dates (datetime64)", "m": "time spans (timedelta64)",
               "O": "objects or variable-length strings", "V": "records (a structured type)", "T": "text"}
_allow_detached = False
#: ``MEDINR_ALLOW_DETACHED_DATA=1`` allows what ``--allow-detached-data`` allows, for callers without a command
#: line (the napari plugin).
ALLOW_DETACHED_ENV = "MEDINR_ALLOW_DETACHED_DATA"


# -- voxel types and shapes --------------------------------------------------------------------------------------
def check_numeric_dtype(path: object, dtype: np.dtype, what: str = "voxels") -> None:
    """Refuse a type that is not bool, integer, float or complex (RGB records, text, dates, objects)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biufc":
        return
    advice = ""
    if dtype.names and set(n.upper() for n in dtype.names) >= {"R", "G", "B"}:
        kind, advice = "RGB colour records", " (convert the colour image to grey levels first)"
    else:
        kind = _KIND_WORDS.get(dtype.kind, f"values of type {dtype}")
    raise MedinrError(f"{path} holds {kind} ({dtype.str}) as its {what}: medinr reads only numbers (bool, "
                      f"integer, float or complex){advice}")


def spatial_shape(path: object, shape: Sequence[int], allow_vector: bool = False) -> tuple[tuple[int, ...], int]:
    """The spatial shape and component count of a declared array shape, or refuse one that is not 2D or 3D.

    Trailing axes of length 1 are dropped (a 2D slice stored as ``(X, Y, 1)``); with ``allow_vector`` a last
    axis of 2 or 3 is a displacement's components (NIfTI stores them as ``(X, Y, Z, 1, C)``).
    """
    full = tuple(int(n) for n in shape)
    dims = list(full)
    components = 1
    if allow_vector and len(dims) in (3, 4, 5) and dims[-1] in (2, 3):
        components = dims.pop()
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) not in (2, 3) or min(dims, default=0) < 1:
        raise MedinrError(f"{path} has shape {full}: expected a 2D or 3D image")
    return tuple(dims), components


def check_declared_size(path: object, shape: Sequence[int], itemsize: int, data_bytes: int, compressed: bool,
                        working_bytes_per_voxel: int = 12) -> None:
    """Refuse a header that declares more voxels than its file can hold, or than the memory budget allows.

    An uncompressed file must hold every declared byte; a compressed one at most ~1032x its size (the deflate
    limit), so a 1 kB file cannot ask for gigabytes. Reading needs the voxels plus about
    ``working_bytes_per_voxel`` bytes each (the float32 copy and the checks).
    """
    check_file_holds(path, shape, itemsize, data_bytes, compressed)
    check_budget(array_bytes(shape, itemsize + working_bytes_per_voxel),
                 f"reading {path} ({'x'.join(map(str, shape))} voxels)")


def check_file_holds(path: object, shape: Sequence[int], itemsize: int, data_bytes: int, compressed: bool) -> None:
    """Refuse a header that declares more bytes than its file (or HDF5 dataset storage) can hold."""
    declared = array_bytes(shape, itemsize)
    room = data_bytes * MAX_DEFLATE_RATIO + 65536 if compressed else data_bytes
    if declared > room:
        raise MedinrError(
            f"{path}: the header declares {'x'.join(map(str, shape))} voxels ({format_bytes(declared)}) but the file "
            f"holds {format_bytes(data_bytes)}{' compressed' if compressed else ''}: it is truncated or damaged"
        )


def check_values(path: object, array: np.ndarray, note: str = "", what: str = "values") -> None:
    """Refuse NaN or infinite values, and values that float32 (or complex64) cannot hold."""
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(array)):
            raise MedinrError(f"{path} contains NaN or infinite {what}{note}")
        if array.dtype.kind in "fc" and array.dtype.itemsize > (8 if array.dtype.kind == "c" else 4) and array.size:
            parts = (array.real, array.imag) if array.dtype.kind == "c" else (array,)
            peak = max(float(np.max(np.abs(part))) for part in parts)
            if peak > FLOAT32_MAX:
                raise MedinrError(f"{path} holds {what} up to {peak:.3g}{note}, beyond what float32 holds "
                                  f"({FLOAT32_MAX:.3g})")


def check_binary(array: np.ndarray, what: str) -> np.ndarray:
    """``array != 0`` for a mask of only 0 and 1 (or bool); a 0/255 or soft mask is refused, not thresholded."""
    arr = np.asarray(array)
    if arr.dtype != bool:
        bad = (arr != 0) & (arr != 1)
        if np.any(bad):
            raise MedinrError(f"{what} must hold only 0 and 1; it holds {arr[bad].flat[0]:g} (threshold it "
                              "first, e.g. mask > 0)")
    return arr != 0


# -- geometry ----------------------------------------------------------------------------------------------------
def check_geometry(path: object, affine: np.ndarray, ndim: int) -> np.ndarray:
    """Refuse a voxel-to-world matrix that is not finite, has a voxel size outside 1 nm .. 1 km (zero included)
    or an origin farther than :data:`MAX_ORIGIN_MM`; returns it as float64."""
    with np.errstate(all="ignore"):
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise MedinrError(f"{path}: the header's voxel-to-world matrix (affine) holds NaN or infinite values")
        if not np.array_equal(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise MedinrError(f"{path}: the affine's last row is {affine[3].tolist()}, not [0, 0, 0, 1]")
        columns = affine[:3, :ndim]
        scale = np.max(np.abs(columns), axis=0)  # scaled, so that a 1e300 mm voxel is reported, not inf
        spacing = scale * np.sqrt(np.sum(np.square(columns / np.where(scale > 0, scale, 1.0)), axis=0))
        for axis, size in enumerate(spacing):
            if not MIN_VOXEL_MM <= size <= MAX_VOXEL_MM:
                raise MedinrError(
                    f"{path}: the voxel size along axis {axis} is {size:.3g} mm; medinr needs voxel sizes between "
                    f"{MIN_VOXEL_MM:g} and {MAX_VOXEL_MM:g} mm (a damaged or missing header geometry?)"
                )
        if np.max(np.abs(affine[:3, 3])) > MAX_ORIGIN_MM:
            raise MedinrError(f"{path}: the image origin {affine[:3, 3].tolist()} mm is more than "
                              f"{MAX_ORIGIN_MM:g} mm from the world origin")
    return affine


# -- data from elsewhere -----------------------------------------------------------------------------------------
@contextmanager
def detached_data_allowed(allowed: bool) -> Iterator[None]:
    """Inside the block, a text header may name a detached data file beside it (``--allow-detached-data``)."""
    global _allow_detached
    saved, _allow_detached = _allow_detached, bool(allowed)
    try:
        yield
    finally:
        _allow_detached = saved


_TEXT_HEADERS = (".mhd", ".mha", ".nhdr", ".nrrd")
_HEADER_LIMIT = 1 << 20
_DATA_KEY = re.compile(r"^\s*(?:ElementDataFile\s*=|data\s?file\s*:)\s*(.*?)\s*$", re.IGNORECASE)


def _header_lines(path: Path) -> list[str]:
    """The lines of a MetaImage or NRRD text header (up to the data), or refuse one that never ends."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    lines = []
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").rstrip("\r")
        if path.suffix.lower() in (".nrrd", ".nhdr") and not line.strip() and lines:
            return lines  # NRRD: a blank line ends the header
        lines.append(line)
        if line.strip().lower().startswith("elementdatafile"):
            return lines  # MetaImage: the last field
    if len(head) >= _HEADER_LIMIT:
        raise MedinrError(f"{path}: the text header runs past {format_bytes(_HEADER_LIMIT)}: not an image header")
    return lines


def detached_data_files(path: str | os.PathLike) -> list[Path]:
    """The data files a MetaImage or NRRD header names outside itself, after checking that each may be read.

    Refuses (MedinrError) any detached data file unless :func:`detached_data_allowed`; then only plain file
    names of regular files beside the header (no path, no link, no list or pattern of files).
    """
    p = Path(path)
    if p.suffix.lower() not in _TEXT_HEADERS:
        return []
    values = [m.group(1) for m in map(_DATA_KEY.match, _header_lines(p)) if m]
    names = [v for v in values if v.upper() != "LOCAL"]
    if not names:
        return []
    shown = names[0][:80]
    if not (_allow_detached or os.environ.get(ALLOW_DETACHED_ENV) == "1"):
        raise MedinrError(f"{p} keeps its voxels in another file ('{shown}'); medinr reads a detached data file "
                          "only with --allow-detached-data, and only from beside its header")
    files = []
    for name in names:
        if name.upper().startswith("LIST") or "%" in name or " " in name or name in (".", "..") or re.search(
                r"[/\\]", name):
            raise MedinrError(f"{p} names '{shown}' as its data: medinr reads one detached data file, named "
                              "without a folder, from beside its header")
        target = p.parent / name
        info = _lstat(target)
        if info is None or not stat.S_ISREG(info.st_mode):
            what = "a link" if info is not None and stat.S_ISLNK(info.st_mode) else "not a regular file there"
            raise MedinrError(f"{p} names '{shown}' as its data file, which is {what}; medinr reads only a "
                              "regular file beside the header")
        files.append(target)
    return files


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def check_hdf5_links(path: object, handle: object) -> None:
    """Refuse an HDF5 file that reaches outside itself: external links, virtual datasets, external storage."""
    import h5py

    links: list[tuple[str, object]] = []
    handle.visititems_links(lambda name, link: links.append((name, link)) and None)  # raising in there breaks h5py
    for name, link in links:
        if isinstance(link, h5py.ExternalLink):
            raise MedinrError(f"{path}: '{name}' is a link into another file ({link.filename}); medinr reads "
                              "only data stored in the file itself")
        if isinstance(link, h5py.HardLink):
            obj = handle.get(name)
            if isinstance(obj, h5py.Dataset):
                check_hdf5_dataset(path, obj, name)


def check_hdf5_dataset(path: object, dataset: object, name: str) -> None:
    """Refuse one HDF5 dataset whose data live in other files (virtual, or external raw storage)."""
    if dataset.is_virtual:
        raise MedinrError(f"{path}: dataset '{name}' is a virtual dataset (its data live in other files); "
                          "medinr reads only data stored in the file itself")
    if dataset.external:
        raise MedinrError(f"{path}: dataset '{name}' keeps its data in external files; medinr reads only data "
                          "stored in the file itself")


# -- small JSON files ------------------------------------------------------------------------------------------
#: Deepest nesting of ``[`` and ``{`` a small JSON file (a sidecar) may have.
MAX_JSON_DEPTH = 32


def load_small_json(path: str | os.PathLike, limit: int = 1 << 20) -> object:
    """A small JSON file (a sidecar): a regular file of at most ``limit`` bytes, read by the one strict JSON
    reader (:func:`medinr.jsonsafe.loads`: depth, duplicate keys, no NaN or Infinity), one line if refused.
    """
    p = Path(path)
    info = _lstat(p)
    if info is None or not stat.S_ISREG(os.stat(p).st_mode):
        raise MedinrError(f"{p} is not a regular file")
    if os.stat(p).st_size > limit:
        raise MedinrError(f"{p} is larger than {format_bytes(limit)}: not a sidecar")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MedinrError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc.reason}") from None
    depth = jsonsafe.nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise MedinrError(f"{p} is nested {depth} levels deep; a sidecar may nest at most {MAX_JSON_DEPTH}")
    return jsonsafe.loads(text, str(p), MAX_JSON_DEPTH, limit)
