"""npe2 sample data: the shipped INR of the MNI152 T1 scan (fitted by ``derive_sample.py``, which reproduces it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medinr.errors import MedinrError

#: The shipped sample checkpoint (package data) and the scan it was fitted to.
SAMPLE_NAME = "mni152_t1_2mm_v2.inr"
SHIPPED = Path(__file__).resolve().parent / "data" / SAMPLE_NAME
SCAN_NAME = "mni152_t1_2mm.nii.gz"


def sample_scan() -> Path:
    """The source volume of the sample (in a source checkout)."""
    path = Path(__file__).resolve().parents[1] / "sample_scans" / SCAN_NAME
    if not path.is_file():
        raise MedinrError(f"the sample scan is missing ({path}); run from a medinr source checkout")
    return path


def sample_checkpoint() -> Path:
    """Path of the shipped sample checkpoint."""
    if not SHIPPED.is_file():
        raise MedinrError(
            f"the sample checkpoint {SHIPPED.name} is missing; recreate it with "
            "'python -m napari_plugin.derive_sample' in a medinr source checkout"
        )
    return SHIPPED


def make_sample_data() -> list[tuple[Any, dict, str]]:
    from napari_plugin._reader import prefer_medinr_for_nifti, read_checkpoints

    prefer_medinr_for_nifti()
    return read_checkpoints(str(sample_checkpoint()))
