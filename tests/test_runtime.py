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


def test_small_work_runs_on_one_thread_and_the_count_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medinr import runtime
    from medinr.runtime import SMALL_WORK, threads_for

    monkeypatch.setattr(runtime, "_LOAD", runtime._LoadFollower())  # not following the load (a chosen count)

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


# /proc/stat with two cores of this process (a: busy user ticks, i: idle ticks) and one it may not use
_STAT = "cpu  {a} 0 0 {i}\ncpu0 {a} 0 0 {i} 0 0 0 0 0 0\ncpu1 {a} 0 0 {i} 0 0 0 0 0 0\ncpu7 999 0 0 0 0 0 0 0\n"


def test_cpu_ticks_sum_the_process_cores_only() -> None:
    from medinr.runtime import cpu_ticks

    text = "cpu  9 9 9 9\ncpu0 10 1 2 30 4 5 6 7 8 9\ncpu1 1 0 0 1\ncpu2 100 0 0 0\nintr 5\n"
    assert cpu_ticks({0}, text) == (10 + 1 + 2 + 5 + 6 + 7, 10 + 1 + 2 + 30 + 4 + 5 + 6 + 7)
    assert cpu_ticks({0, 1}, text) == (31 + 1, 65 + 2)
    assert cpu_ticks({5}, text) is None


@pytest.mark.parametrize(("others", "threads"), [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (2.0, 1)])
def test_free_threads_are_the_cores_others_leave(others: float, threads: int) -> None:
    from medinr.runtime import free_threads

    assert free_threads(2, 2, others) == threads
    assert free_threads(8, 64, others) == 8  # a quota of 8 on a large host: its cores are not the limit


def test_threads_follow_the_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One other busy process on one of two cores: one thread; the core free again: two; a user's count or an open
    one-thread block is left alone."""
    import torch

    from medinr import runtime

    stat, own = tmp_path / "stat", [0.0]
    monkeypatch.setattr(runtime, "_PROC_STAT", stat)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(runtime.os, "times", lambda: os.times_result((own[0], 0.0, 0.0, 0.0, 0.0)))
    monkeypatch.setattr(runtime.os, "sysconf", lambda name: 100)
    ticks = {"a": 0, "i": 0}

    def tick(busy: int, idle: int, mine: float) -> None:  # per core, over one second of 100 ticks
        ticks["a"] += busy
        ticks["i"] += idle
        own[0] += mine
        stat.write_text(_STAT.format(**ticks))

    follower = runtime._LoadFollower()
    monkeypatch.setattr(runtime, "_LOAD", follower)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        tick(0, 0, 0.0)
        follower.start(2)
        tick(100, 0, 1.0)  # both cores busy, this process used one of them: another process has the other
        assert follower.follow(follower._when + 0.5) is None  # not due yet
        assert follower.follow(follower._when + 1.0) == 1 and torch.get_num_threads() == 1
        tick(50, 50, 1.0)  # one core busy, all of it this process: the other core is free again
        assert follower.follow(follower._when + 1.0) == 2 and torch.get_num_threads() == 2
        tick(100, 0, 1.0)
        with runtime.threads_for(10):  # a one-thread block: the look is kept for its end
            assert follower.follow(follower._when + 1.0) is None and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
        tick(50, 50, 1.0)
        assert follower.follow(follower._when + 1.0) == 2 and torch.get_num_threads() == 2
        follower.start(None)  # a count the user chose
        tick(100, 0, 0.0)
        assert follower.follow(follower._when + 5.0) is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_only_a_count_the_user_chose_stops_the_following() -> None:
    """A second configure_threads in one process (a command run twice) sees its own OMP_NUM_THREADS, not the
    user's; the user's own variable turns the following off."""
    code = ("import os; from medinr import runtime as r; n = r.configure_threads(); r.configure_threads(); "
            "print(r._LOAD.limit == n, os.environ['OMP_NUM_THREADS'] == str(n)); "
            "os.environ['OMP_NUM_THREADS'] = '1'; r.configure_threads(); print(r._LOAD.limit)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MEDINR_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["True", "True", "None"]
