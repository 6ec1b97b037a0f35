"""Reading and writing images with their geometry: NIfTI through nibabel, everything else through SimpleITK.

SimpleITK works in LPS; the conversion to the RAS+ affine of CONVENTIONS.md happens here and nowhere else.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from medinr.errors import MedinrError
from medinr.geometry import Geometry

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


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
        If the file is missing, unreadable, not 2D/3D, or holds non-finite values.
    """
    p = Path(path)
    if not p.exists():
        raise MedinrError(f"file not found: {p}")
    try:
        if p.is_dir():
            array, affine = _load_dicom_series(p)
        elif _is_nifti(p):
            img = nib.load(str(p))
            array = np.asanyarray(img.dataobj)
            affine = img.affine
            if not allow_vector:
                while array.ndim > 3 and array.shape[-1] == 1:
                    array = array[..., 0]
            # a 2D slice stored as (X, Y, 1) is a 2D image
            if array.ndim == 3 and array.shape[2] == 1 and not allow_vector:
                array = array[:, :, 0]
            elif array.ndim == 5 and allow_vector and array.shape[3] == 1:
                array = array[:, :, :, 0, :]
        elif p.suffix.lower() == ".npy":
            array = np.load(p, allow_pickle=False)
            affine = np.eye(4)
        else:
            import SimpleITK as sitk

            sitk_img = sitk.ReadImage(str(p))
            array = sitk_to_array(sitk_img)
            if sitk_img.GetNumberOfComponentsPerPixel() > 1 and not allow_vector:
                if array.shape[-1] in (3, 4) and sitk_img.GetDimension() == 2:
                    array = array[..., :3].mean(axis=-1)  # RGB(A) picture: use its luminance
            affine = sitk_to_affine(sitk_img)
    except MedinrError:
        raise
    except Exception as exc:  # nibabel/SimpleITK/numpy raise many types for a corrupt file
        raise MedinrError(f"cannot read image {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    array = np.asarray(array)
    spatial = array.ndim - 1 if (allow_vector and array.ndim in (3, 4) and array.shape[-1] in (2, 3)) else array.ndim
    if spatial not in (2, 3):
        raise MedinrError(f"{p} has shape {array.shape}: expected a 2D or 3D image")
    if np.iscomplexobj(array):
        array = array.astype(np.complex64)
    else:
        array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise MedinrError(f"{p} contains NaN or infinite values")
    return array, Geometry(array.shape[:spatial], affine)


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
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes private (0600) files; a result should get the permissions of any new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
