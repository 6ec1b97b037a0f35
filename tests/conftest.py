"""Shared fixtures: paths of the sample scans and small images derived from them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medinr.runtime import configure_allocator

# Tests run on 2 cores; more threads than cores only slows small tensors down.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
# The allocator policy the command line sets (freed tensor memory kept for reuse).
configure_allocator()

# The viewer tests draw with Mesa's default software renderer (llvmpipe) under Xvfb. An early version of the 3D
# view crashed it (SIGSEGV in glDrawArrays) in about one run in four of the 3D -> 2D round trip, so the suite
# ran on softpipe, which drew the viewer tests in about 270 s instead of 75 s. With the 3D view as it is now
# (Mesa 22.3.6), 25 runs of that round trip and of the linked views, and 8 runs of every viewer test, all passed
# on llvmpipe. ``GALLIUM_DRIVER=softpipe`` in the environment still selects the slower renderer.

SAMPLES = Path(__file__).resolve().parent.parent / "sample_scans"


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def coronal_slice() -> np.ndarray:
    """The real 256x256 coronal T1 slice (values 0..1)."""
    from medinr.io import load_image

    image, _ = load_image(SAMPLES / "t1_coronal_slice.nii.gz")
    return image


@pytest.fixture(scope="session")
def coronal_64(coronal_slice: np.ndarray) -> np.ndarray:
    """The coronal slice area-averaged to 64x64 (4x4 blocks)."""
    return coronal_slice.reshape(64, 4, 64, 4).mean(axis=(1, 3)).astype(np.float32)


@pytest.fixture
def fixed_threads(monkeypatch):
    """One thread count for every run of a test that compares seeded runs: the count is chosen
    (``MEDINR_THREADS``), so the thread policy does not follow other processes' load between the runs and change the
    last digits (README, reproducibility)."""
    from medinr import runtime

    monkeypatch.setenv(runtime.ENV_THREADS, "2")
    limit = runtime._LOAD.limit
    runtime._LOAD.start(None)  # library calls too: no following until the test ends
    torch.set_num_threads(2)
    yield
    runtime._LOAD.start(limit)
