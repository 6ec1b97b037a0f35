"""Derive the registration demo pair: the 2 mm MNI152 T1 and its labels warped by a known smooth deformation.

    python sample_scans/make_warped_pair.py    (with medinr installed)

moving(x) = T1(x + v(x)), with v a random smooth field (Gaussian-filtered noise, sigma 20 mm, seed 7) scaled to
5 mm at most inside the brain; the labels are warped alike (nearest neighbour). Registering the original T1
(fixed) to the warped one (moving) should undo v.
"""

from pathlib import Path

import numpy as np
from scipy import ndimage

from medinr.io import load_image, save_image
from medinr.registration.field import warp_image

HERE = Path(__file__).resolve().parent
SEED, SIGMA_MM, MAX_MM = 7, 20.0, 5.0

t1, geom = load_image(HERE / "mni152_t1_2mm.nii.gz")
labels, _ = load_image(HERE / "mni152_labels_2mm.nii.gz")
rng = np.random.default_rng(SEED)
field = np.stack([ndimage.gaussian_filter(rng.standard_normal(geom.shape), SIGMA_MM / geom.spacing)
                  for _ in range(3)], -1)
field *= MAX_MM / np.linalg.norm(field, axis=-1)[labels > 0].max()
warped_t1 = np.round(warp_image(t1, geom, field, geom)).astype(np.uint8)
save_image(HERE / "mni152_t1_2mm_warped.nii.gz", warped_t1, geom, np.uint8)
warped_labels = warp_image(labels, geom, field, geom, mode="nearest")
save_image(HERE / "mni152_labels_2mm_warped.nii.gz", warped_labels, geom, np.uint8)
print(f"largest displacement in the brain {np.linalg.norm(field, axis=-1)[labels > 0].max():.2f} mm")
