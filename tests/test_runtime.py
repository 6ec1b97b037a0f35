"""The process-wide run policy (medinr.runtime): thread counts, cgroup quotas and the allocator settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medinr.errors import MedinrError
from medinr.runtime import cgroup_cpu_limit, thread_count

# A training step's shape of work (a 32 x 16 decoder layer on 2^18 points, forward and backward), then the minor
# page faults of 10 more steps: with glibc's defaults each step's large tensors are fresh mmaps whose pages the kernel
# zeroes again; with the policy they are reused from the heap.
_FAULTS = """
import resource, sys
from medinr.runtime import configure_allocator
took = configure_allocator() if sys.argv[1] == "policy" else None
import torch
torch.set_num_threads(1)
x = torch.rand(16, 1 << 18, requires_grad=True)
w = torch.rand(32, 16)
def step():
    torch.relu(w @ x).sum().backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    import os

    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_policy_reuses_freed_memory() -> None:
    took, kept = _faults("policy")
    _, default = _faults("default")
    assert took == "True"
    assert default > 10 * 16384  # at least the 32 MiB activation faulted in again every step
    assert kept < default / 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_policy_can_be_switched_off() -> None:
    took, faults = _faults("policy", {"MEDINR_MALLOC": "system"})
    assert took == "False" and faults > 10 * 16384
    took, _ = _faults("policy", {"MALLOC_MMAP_THRESHOLD_": "131072"})  # the user's own glibc setting is kept
    assert took == "False"


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
