"""Dense fields on the fixed grid: displacement, warped images, Jacobian determinant, and the ITK export.

ITK's DisplacementFieldTransform maps a fixed point p (LPS mm) to p + v(p) in the moving image; our u is
in RAS mm, so the export flips the signs of the x and y components and nothing else.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.geometry import Geometry, sample_grid
from medinr.gzipfile import gzip_file
from medinr.io import array_to_sitk, quiet_native_output, sitk_to_affine, sitk_to_array
from medinr.registration.jacobian import jacobian_determinant_on_grid


def dense_displacement(u_field: ContinuousImage, geometry: Geometry) -> np.ndarray:
    """u at every voxel centre of ``geometry``: ``(*shape, ndim)`` float64 in RAS mm."""
    return u_field.on_grid(geometry).astype(np.float64)


#: Points per slab of planes in :func:`warp_image` (float64 temporaries of this size stay cheap to allocate; whole
#: 1 mm brains' arrays made the warp spend more time in allocation and copies than in sampling).
WARP_SLAB_POINTS = 1 << 20


def warp_image(
    moving: np.ndarray,
    moving_geometry: Geometry,
    displacement: np.ndarray,
    fixed_geometry: Geometry,
    mode: str = "bilinear",
) -> np.ndarray:
    """Resample ``moving`` on the fixed grid at x + u(x) (``mode='nearest'`` for labels), as ITK's resampler does.

    Points that fall outside the moving image (more than half a voxel beyond its outermost voxel centres) take
    the value 0; within that half voxel the outermost voxels' values hold (ITK clamps its interpolation there,
    where zero padding would fade the edge: the images then differed by up to 0.08 at a moving image's edge).
    Coordinates are float64 (so that the export test compares like with like), a slab of planes at a time.
    """
    nd = fixed_geometry.ndim
    image = torch.as_tensor(np.asarray(moving, dtype=np.float32)).double()  # the values a Warper samples
    to_moving = np.linalg.inv(moving_geometry.affine_nd)  # world mm -> moving voxel
    grid_to_moving = to_moving @ fixed_geometry.affine_nd  # fixed voxel -> moving voxel, at u = 0
    mm_to_voxel = torch.as_tensor(to_moving[:nd, :nd].T)
    grid_linear, grid_offset = torch.as_tensor(grid_to_moving[:nd, :nd].T), torch.as_tensor(grid_to_moving[:nd, nd])
    upper = torch.as_tensor(np.asarray(moving_geometry.shape, dtype=np.float64) - 1)
    disp = torch.as_tensor(np.asarray(displacement, dtype=np.float64))
    shape = tuple(fixed_geometry.shape)
    out = np.empty(shape, dtype=np.float32)
    step = max(1, WARP_SLAB_POINTS // max(1, int(np.prod(shape[1:]))))
    axes = [torch.arange(n, dtype=torch.float64) for n in shape[1:]]
    for s in range(0, shape[0], step):
        ijk = torch.stack(torch.meshgrid(torch.arange(s, min(s + step, shape[0]), dtype=torch.float64), *axes,
                                         indexing="ij"), dim=-1)
        v = torch.addmm(grid_offset, ijk.reshape(-1, nd), grid_linear)
        v.addmm_(disp[s : s + step].reshape(-1, nd), mm_to_voxel)
        inside = ((v >= -0.5 - 1e-6) & (v <= upper + 0.5 + 1e-6)).all(dim=-1)  # ITK's 'inside buffer'
        values = sample_grid(image, moving_geometry.voxel_to_network(v), mode=mode, padding_mode="border")
        out[s : s + step] = torch.where(inside, values, 0.0).reshape(ijk.shape[:-1]).numpy()
    return out


def jacobian_map(u_field: ContinuousImage, geometry: Geometry, chunk: int = 65536) -> np.ndarray:
    """``det(I + grad u)`` at every voxel centre, exact: ``(*shape)`` float32
    (:func:`medinr.registration.jacobian.jacobian_determinant_on_grid`)."""
    return jacobian_determinant_on_grid(u_field, geometry, chunk=chunk)


def jacobian_map_fd(displacement: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``det(I + grad u)`` of a dense field by central finite differences (any method's field)."""
    nd = geometry.ndim
    # d u / d voxel index, then chain rule through the inverse linear part of the affine (mm -> voxel)
    inv = np.linalg.inv(geometry.affine_nd[:nd, :nd])
    grads = np.stack([np.stack(np.gradient(displacement[..., i], axis=tuple(range(nd))), -1) for i in range(nd)], -2)
    jac = grads @ inv  # (..., i, j) = du_i / dx_j
    return np.linalg.det(np.eye(nd) + jac).astype(np.float32)


def _flip_ras_lps_(vectors: np.ndarray) -> np.ndarray:
    """RAS <-> LPS in place: x and y change sign (a 2D image's in-plane (x, y) is the axial plane, so both flip
    too); the flip is its own inverse."""
    vectors[..., :2] *= -1.0
    return vectors


def displacement_to_sitk(displacement: np.ndarray, geometry: Geometry) -> "sitk.Image":  # noqa: F821
    """The field as a SimpleITK sitkVectorFloat64 image on ``geometry``, vectors in LPS mm (ITK convention)."""
    nd = geometry.ndim
    # SimpleITK's axis order in one blocked copy by torch (NumPy's transposed copy of a 1 mm brain's field took
    # 0.7-0.8 s, this 0.13 s), then RAS -> LPS in place
    itk = torch.from_numpy(np.asarray(displacement, dtype=np.float64)).permute(*range(nd)[::-1], nd).contiguous()
    return array_to_sitk(_flip_ras_lps_(itk.numpy()), geometry, vector=True, itk_order=True)  # sitkVectorFloat64


def write_displacement(path: str | Path, displacement: np.ndarray, geometry: Geometry) -> None:
    """Write the field with SimpleITK so that the header is what ITK/ANTs/elastix expect.

    A ``.nii.gz`` name is written by SimpleITK uncompressed beside ``path`` and then compressed by
    :mod:`medinr.gzipfile` (ITK's own deflate took 0.6 s of a 2 mm registration's writing; this 0.1 s). The price
    is room for the uncompressed field while it is written (8 bytes per component and voxel: 26 MB for a 2 mm
    brain, 170 MB at 1 mm), on the output's own disk, whose full state is reported as any other.
    """
    import SimpleITK as sitk

    target = Path(path)
    image = displacement_to_sitk(displacement, geometry)
    if not target.name.lower().endswith(".nii.gz"):
        sitk.WriteImage(image, str(target))
        return
    with tempfile.TemporaryDirectory(prefix=".medinr-field-", dir=target.parent) as tmp:
        raw = Path(tmp) / target.name[: -len(".gz")]
        with quiet_native_output():  # niftilib prints a failed write and returns; checked below
            sitk.WriteImage(image, str(raw))
        _check_complete(raw, NIFTI1_DATA_OFFSET + displacement.size * 8, target)
        gzip_file(raw, target)


#: Where a single-file NIfTI-1's data begin (its 348-byte header and the 4-byte extension flag).
NIFTI1_DATA_OFFSET = 352


def _check_complete(raw: Path, expected: int, target: Path) -> None:
    """Refuse a file SimpleITK cut short: its NIfTI writer reports a failed write (a full disk, a file-size limit)
    only on stderr and returns. Writing the missing bytes again raises the system's own error, which names the
    cause; should it succeed, the file is still not what SimpleITK meant to write."""
    missing = expected - raw.stat().st_size
    if missing <= 0:
        return
    with open(raw, "ab") as f:
        f.write(bytes(missing))
        f.flush()
        os.fsync(f.fileno())
    raise OSError(errno.EIO, f"SimpleITK wrote {expected - missing} of {expected} bytes", str(target))


def sitk_field_to_ras(image: "sitk.Image") -> tuple[np.ndarray, Geometry]:  # noqa: F821
    """Read an ITK displacement field image back as ``(*shape, ndim)`` RAS mm vectors and its geometry."""
    arr = sitk_to_array(image).astype(np.float64)  # a copy: flipped in place
    return _flip_ras_lps_(arr), Geometry(arr.shape[:-1], sitk_to_affine(image))
