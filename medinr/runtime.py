"""The process-wide run policy: how many threads torch (and NumPy's BLAS) use, how idle ones wait, and how freed
tensor memory is kept.

Set once, before torch is imported (``medinr`` imports torch only when work starts, so the command line calls
:func:`configure_threads` first; the napari plugin and a batch worker call it too):

- **threads no more than the cores this process may use**: its CPU affinity (``os.sched_getaffinity``) and
  its cgroup CPU quota (a container or a SLURM job given 2 of 64 cores gets 2 threads, not 64);
- **passive waiting after a short spin** (``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT`` :data:`SPIN_COUNT`): an
  OpenMP thread that waits for the others spins briefly, then sleeps. With a spinning pool, one other busy
  process on a 2-core machine made torch's threads burn their time waiting for the thread that lost its core (a
  4x reconstruction went from 24 s to 293 s); a pool that sleeps at once pays a wake-up for every parallel
  operation instead (on a quiet virtual machine a 2D fit took 4.4 s against 2.2 s spinning);
- **threads as many as the cores others leave free** (:func:`follow_load`, called by the training loop about
  once a second): with another busy process on one of two cores, one thread, which neither waits for a thread
  that lost its core nor spins against that process; back to two when the core is free again;
- **one thread per worker** where a batch runner runs several cases side by side (``configure_threads(1)``);
- **an override**: ``MEDINR_THREADS=N`` in the environment.

The wait policy is read by the OpenMP runtime when it starts (when torch is imported): set later, only the thread
count takes effect. A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept, and a count the user or a
batch runner chose (``MEDINR_THREADS``, ``OMP_NUM_THREADS``, ``configure_threads(n)``) is never followed down.

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
import time
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
#: Iterations an idle OpenMP thread spins before it sleeps (libgomp's ``GOMP_SPINCOUNT``; 0 under a bare
#: ``PASSIVE`` policy). On the quiet 2-core machine of the speed benchmark a 2D fit took 4.4 s sleeping at once,
#: 3.2 s after 1000 spins, 2.2 s after 10000 and 2.0 s spinning without end; with another busy process on one of
#: the cores the same spin cost 10.7 s on two threads (3.8 s sleeping at once), which :func:`follow_load` avoids by
#: running one thread.
SPIN_COUNT = 10000
#: Seconds between two looks at how busy the other processes keep this process's cores (:func:`follow_load`).
LOAD_PERIOD = 1.0
_PROC_STAT = Path("/proc/stat")
#: The pool sizes :func:`configure_threads` put in the environment.
_WRITTEN: dict[str, str] = {}


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
    (else on its threads as set); yields the count used and restores the previous one, or fewer if
    :func:`follow_load` found the cores busy meanwhile."""
    import torch

    before = torch.get_num_threads()
    used = 1 if elements < SMALL_WORK else before
    if used != before:
        torch.set_num_threads(used)
        _LOAD.in_block = True
    try:
        yield used
    finally:
        if used != before:
            torch.set_num_threads(_LOAD.after_block(before))


def configure_threads(n: int | None = None) -> int:
    """Apply the thread policy to this process and return its thread count (see the module notes).

    Parameters
    ----------
    n : int, optional
        Threads for this process (a batch runner: its share per worker); default :func:`thread_count`.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` after :data:`SPIN_COUNT` spins unless the user chose a policy, and the
    pools' sizes (:data:`POOL_VARIABLES`) for libraries not loaded yet; if torch is already loaded, its intra-op
    pool too; the allocator policy (:func:`configure_allocator`); and, unless the count was chosen (``n``,
    ``MEDINR_THREADS`` or ``OMP_NUM_THREADS``), starts :func:`follow_load`'s measurement of the other processes.
    """
    threads = thread_count(n)
    configure_allocator()
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    # an OMP_NUM_THREADS this function wrote (a command run twice in one process) is not the user's choice
    user_omp = os.environ.get("OMP_NUM_THREADS", "").strip() not in ("", _WRITTEN.get("OMP_NUM_THREADS"))
    chosen = n is not None or bool(os.environ.get(ENV_THREADS, "").strip()) or user_omp
    _LOAD.start(None if chosen else threads)
    for name in POOL_VARIABLES:
        os.environ[name] = _WRITTEN[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads") and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def cpu_ticks(cpus: set[int], text: str) -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of ``cpus`` summed from the per-CPU lines of ``/proc/stat`` text; None when
    none of them is listed. Busy is user, nice, system, irq, softirq and steal (a hypervisor's other guests)."""
    busy = total = 0
    found = False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()[:8]]
        if len(ticks) < 4:
            continue
        ticks += [0] * (8 - len(ticks))
        user, nice, system, idle, iowait, irq, softirq, steal = ticks
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
        found = True
    return (busy, total) if found else None


def free_threads(limit: int, cpus: int, others: float) -> int:
    """Threads for a process allowed ``limit`` when other processes keep ``others`` of its ``cpus`` cores busy:
    the free cores, rounded, between 1 and ``limit``."""
    return max(1, min(limit, math.floor(cpus - others + 0.5)))


class _LoadFollower:
    """Measures the other processes' share of this process's cores between two looks (:func:`follow_load`)."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self.cpus: set[int] = set()
        self._last: tuple[int, int, float] | None = None
        self._when = 0.0
        self.in_block = False  # a :func:`threads_for` block that asked for one thread is open
        self.decided: int | None = None  # the count of the last look

    def start(self, limit: int | None) -> None:
        self.limit, self._last, self.decided = limit, None, None
        if limit is None or limit < 2:
            return
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.limit = None
            return
        self._last = self._sample()
        self._when = time.monotonic()

    def _sample(self) -> tuple[int, int, float] | None:
        try:
            ticks = cpu_ticks(self.cpus, _PROC_STAT.read_text())
        except OSError:
            return None
        if ticks is None:
            return None
        own = os.times()
        return ticks[0], ticks[1], (own.user + own.system) * os.sysconf("SC_CLK_TCK")

    def follow(self, now: float | None = None) -> int | None:
        """The thread count set, if a look was due and possible (else None)."""
        now = time.monotonic() if now is None else now
        if self.limit is None or self._last is None or now - self._when < LOAD_PERIOD:
            return None
        current = self._sample()
        if current is None:
            self.limit = None
            return None
        busy, total, own = (b - a for a, b in zip(self._last, current))
        self._last, self._when = current, now
        if total <= 0:
            return None
        others = max(0.0, (busy - own) * len(self.cpus) / total)
        self.decided = free_threads(self.limit, len(self.cpus), others)
        torch = sys.modules.get("torch")
        if torch is None or self.in_block:
            return None  # a one-thread block: its end applies the decision (:meth:`after_block`)
        if torch.get_num_threads() != self.decided:
            torch.set_num_threads(self.decided)
        return self.decided

    def after_block(self, before: int) -> int:
        """The count to restore at the end of a :func:`threads_for` block that had ``before``: the latest decision
        if one was made, capped by ``before``."""
        self.in_block = False
        return min(before, self.decided) if self.limit is not None and self.decided is not None else before


_LOAD = _LoadFollower()


def follow_load() -> int | None:
    """Set torch's threads to the cores the other processes leave free (at most the count
    :func:`configure_threads` chose), if :data:`LOAD_PERIOD` has passed since the last look; returns the count
    set, or None (not due, not measurable, the count was chosen by the user, or a :func:`threads_for` block is
    open). Call it from the thread that runs torch's operations (an OpenMP pool belongs to its calling thread):
    the training loop does, between steps."""
    return _LOAD.follow()


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
