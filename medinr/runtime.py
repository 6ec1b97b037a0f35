"""The process-wide run policy: how many threads torch (and NumPy's BLAS) use, how idle ones wait, and how freed
tensor memory is kept.

Set once, before torch is imported (``medinr`` imports torch only when work starts, so the command line calls
:func:`configure_threads` first; the napari plugin and a batch worker call it too):

- **threads no more than the cores this process may use**: its CPU affinity (``os.sched_getaffinity``) and
  its cgroup CPU quota (a container or a SLURM job given 2 of 64 cores gets 2 threads, not 64);
- **passive waiting** (``OMP_WAIT_POLICY=PASSIVE``): an OpenMP thread that waits for the others sleeps instead of
  spinning. With a spinning pool, one other busy process on a 2-core machine made torch's threads burn their
  time waiting for the thread that lost its core (a 4x reconstruction went from 24 s to 293 s); a passive pool
  loses about the share of the core that was taken;
- **one thread per worker** where a batch runner runs several cases side by side (``configure_threads(1)``);
- **an override**: ``MEDINR_THREADS=N`` in the environment.

The wait policy is read by the OpenMP runtime when it starts (when torch is imported): set later, only the thread
count takes effect. A user's own ``OMP_WAIT_POLICY`` is kept.

**Freed memory stays for reuse** (:func:`configure_allocator`, glibc only): by default glibc gives every block
over a few MiB its own ``mmap`` and returns it to the kernel when freed, so each training step's large tensors
(a 256 x 256 fit's footprint lattice: 16 MiB of features) came back as fresh pages the kernel had to zero. That
was 40 % of a fit's time in the kernel (``sys`` 25 s of a 44 s fit); served from the heap instead, a step took
0.057 s instead of 0.108 s. A user's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` is kept, and
``MEDINR_MALLOC=system`` leaves the C library's defaults.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medinr.errors import MedinrError

#: Environment variable that overrides the thread count of every medinr run in this process.
ENV_THREADS = "MEDINR_THREADS"
#: Thread pools sized from the environment when their library loads: OpenMP (torch), MKL, OpenBLAS (NumPy).
POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_CGROUP = Path("/sys/fs/cgroup")

#: ``MEDINR_MALLOC=system`` keeps the C library's allocation thresholds.
ENV_ALLOCATOR = "MEDINR_MALLOC"
#: Blocks up to this size come from the heap, not their own mmap; freed heap memory up to it is kept. Above the
#: largest tensor of a default step (a 256 x 256 fit's: 16-64 MiB with its gradients), below what would hold a
#: whole machine's memory hostage.
HEAP_BLOCK_BYTES = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def cgroup_cpu_limit(root: Path = _CGROUP) -> float | None:
    """Cores allowed by this process's cgroup CPU quota (``cpu.max`` of cgroup v2 or ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` of v1); None when there is no quota or it cannot be read."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota != "max":
            return float(quota) / float(period or 100000)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by its cgroup quota (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, math.ceil(quota - 1e-9))
    return max(1, cores)


def _positive(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise MedinrError(f"{where} must be a positive number of threads, got '{text}'")
    return value


def thread_count(requested: int | None = None) -> int:
    """The threads a run uses: ``requested`` (a caller's choice, e.g. a batch worker's share), else
    ``$MEDINR_THREADS``, else the user's ``$OMP_NUM_THREADS``, else :func:`usable_cores`.

    Raises
    ------
    MedinrError
        If ``requested`` or ``$MEDINR_THREADS`` is not a positive integer.
    """
    if requested is not None:
        return _positive(str(requested), "the thread count")
    if os.environ.get(ENV_THREADS, "").strip():
        return _positive(os.environ[ENV_THREADS].strip(), ENV_THREADS)
    user = os.environ.get("OMP_NUM_THREADS", "").strip()
    if user.isdigit() and int(user) > 0:
        return int(user)
    return usable_cores()


#: Elements per op below which a second thread costs more than it gives: with passive waiting every parallel op
#: wakes the sleeping threads (a registration's first level, 20k nodes: 20 ms a step on 2 threads, 12 on one).
SMALL_WORK = 65536


@contextmanager
def threads_for(elements: int) -> Iterator[int]:
    """Within the block, torch runs on one thread if its tensors have fewer than :data:`SMALL_WORK` elements
    (else on its threads as set); yields the count used and restores the previous one."""
    import torch

    before = torch.get_num_threads()
    used = 1 if elements < SMALL_WORK else before
    if used != before:
        torch.set_num_threads(used)
    try:
        yield used
    finally:
        if used != before:
            torch.set_num_threads(before)


def configure_threads(n: int | None = None) -> int:
    """Apply the thread policy to this process and return its thread count (see the module notes).

    Parameters
    ----------
    n : int, optional
        Threads for this process (a batch runner: its share per worker); default :func:`thread_count`.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy, and the pools' sizes
    (:data:`POOL_VARIABLES`) for libraries not loaded yet; if torch is already loaded, its intra-op pool too; and
    the allocator policy (:func:`configure_allocator`).
    """
    threads = thread_count(n)
    configure_allocator()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in POOL_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads") and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def configure_allocator(keep_environment: bool = True) -> bool:
    """Serve blocks up to :data:`HEAP_BLOCK_BYTES` from the heap and keep freed memory for reuse (see the module
    notes); True when glibc took the settings.

    Nothing is changed (False) off Linux, with a C library without ``mallopt`` thresholds (musl ignores them),
    under ``MEDINR_MALLOC=system``, or when glibc's own ``MALLOC_*_THRESHOLD_`` variables are set, unless
    ``keep_environment`` is False: a Dask worker's environment sets ``MALLOC_TRIM_THRESHOLD_=65536`` for every
    worker (Dask's default ``pre-spawn-environ``), not the user.
    """
    if os.environ.get(ENV_ALLOCATOR, "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    variables = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    if keep_environment and any(os.environ.get(name) for name in variables):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_BYTES) == 1
