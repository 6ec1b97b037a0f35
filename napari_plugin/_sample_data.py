"""npe2 sample data: an INR fitted to the 2 mm MNI152 T1 scan, shipped (~0.6 MB) or else fitted once and cached."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medinr.errors import MedinrError

#: A small hash grid: fits the 2 mm scan to about 30 dB in a few hundred steps and loads in milliseconds.
SAMPLE_MODEL = {"levels": 8, "log2_table_size": 14, "base_resolution": 8, "max_resolution": 96, "hidden": 32}
SAMPLE_STEPS = 300
SAMPLE_NAME = "mni152_t1_2mm_hashgrid_v1.inr"
#: The same fit shipped with the plugin, so that opening the sample never blocks napari on a fit.
SHIPPED = Path(__file__).resolve().parent / "data" / SAMPLE_NAME


def cache_dir() -> Path:
    """``$MEDINR_CACHE``, else ``$XDG_CACHE_HOME/medinr``, else ``~/.cache/medinr``."""
    if os.environ.get("MEDINR_CACHE"):
        return Path(os.environ["MEDINR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medinr"


def sample_scan() -> Path:
    path = Path(__file__).resolve().parents[1] / "sample_scans" / "mni152_t1_2mm.nii.gz"
    if not path.is_file():
        raise MedinrError(f"the sample scan is missing ({path}); run from a medinr source checkout")
    return path


def sample_checkpoint(steps: int | None = None) -> Path:
    """Path of the shipped sample checkpoint, else of the cached one, fitting it first if needed.

    The fit (``SAMPLE_MODEL``, ``SAMPLE_STEPS`` steps) takes a minute or more on 2 CPU cores and reaches about
    35 dB PSNR against the scan; it is written to :func:`cache_dir` and reused.
    """
    if SHIPPED.is_file():
        return SHIPPED
    steps = SAMPLE_STEPS if steps is None else steps
    target = cache_dir() / SAMPLE_NAME
    if target.is_file():
        return target
    from medinr.checkpoint import save_checkpoint
    from medinr.image_fit import fit_image
    from medinr.io import load_image

    image, geometry = load_image(sample_scan())
    fitted = fit_image(
        image,
        geometry,
        "hashgrid",
        steps=steps,
        lr=5e-3,
        batch_size=1 << 14,
        progress=False,
        model_options=dict(SAMPLE_MODEL),
    )
    fitted.extra["sample"] = "MNI152 2009a T1, 2 mm"
    save_checkpoint(target, fitted)
    return target


def make_sample_data() -> list[tuple[Any, dict, str]]:
    from napari_plugin._layers import open_checkpoint

    return open_checkpoint(sample_checkpoint())
