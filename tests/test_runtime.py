"""The process-wide run policy (medinr.runtime): thread counts, cgroup quotas and the allocator settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medinr.errors import MedinrError
from medinr.runtime import cgroup_cpu_limit, thread_count

# Where a 64 MiB block comes from: with glibc's defaults its own mmap (far above the heap, returned to the kernel
# when freed, so the next step's tensor of that size is fresh pages the kernel zeroes again); with the policy the
# heap, below the program break, where a freed block is reused.
_SOURCE = """
import ctypes, sys
from medinr.runtime import configure_allocator
modes = {"policy": configure_allocator, "worker": lambda: configure_allocator(keep_environment=False)}
took = modes[sys.argv[1]]() if sys.argv[1] in modes else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_long]
libc.free.argtypes = [ctypes.c_void_p]
block = libc.malloc(64 << 20)
print(took, "heap" if block < libc.sbrk(0) else "mmap")
libc.free(block)
if took is False:  # why, for a failure message
    import os
    print("env:", {k: v for k, v in os.environ.items() if "MALLOC" in k or "TUNABLE" in k}, sys.platform)
"""


def _source(mode: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """``(what configure_allocator returned, where a 64 MiB block came from)`` in a fresh interpreter; ``mode`` is
    'default' (no policy), 'policy' (the command line's) or 'worker' (a batch worker's)."""
    # Without glibc's own variables: an in-process Dask cluster (the batch tests) leaves its workers'
    # MALLOC_TRIM_THRESHOLD_ in this process's environment.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _SOURCE, mode], capture_output=True, text=True, check=True,
                         env={**clean, **(env or {})}).stdout.split(maxsplit=2)
    if mode == "policy" and not env and out[0] != "True":
        pytest.fail(" ".join(out))
    return out[0], out[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_policy_serves_large_blocks_from_the_heap() -> None:
    assert _source("default") == ("None", "mmap")
    assert _source("policy") == ("True", "heap")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_policy_can_be_switched_off() -> None:
    assert _source("policy", {"MEDINR_MALLOC": "system"}) == ("False", "mmap")
    # the user's own glibc setting is kept
    assert _source("policy", {"MALLOC_MMAP_THRESHOLD_": "131072"}) == ("False", "mmap")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_policy_over_the_environment_of_a_dask_worker() -> None:
    assert _source("worker", {"MALLOC_TRIM_THRESHOLD_": "65536"}) == ("True", "heap")


def test_thread_count_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDINR_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert thread_count(1) == 1
    assert thread_count() == 3
    monkeypatch.delenv("MEDINR_THREADS")
    assert thread_count() == 5
    monkeypatch.setenv("MEDINR_THREADS", "zero")
    with pytest.raises(MedinrError, match="MEDINR_THREADS must be a positive number"):
        thread_count()


def test_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(v1) == pytest.approx(2.0)


def test_small_work_runs_on_one_thread_and_the_count_comes_back() -> None:
    import torch

    from medinr.runtime import SMALL_WORK, threads_for

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads_for(SMALL_WORK - 1) as used:
            assert used == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads_for(SMALL_WORK) as used:
            assert used == 2 and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads_for(10):
            raise RuntimeError("a failing fit")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
