"""Memory budgets: what a run may allocate, checked against an estimate before the allocation happens.

The budget is 80 % of the memory this process can still get (the least of the machine's available memory,
a cgroup limit and an address-space rlimit), or what ``MEDINR_MEMORY_LIMIT`` / ``medinr --memory-limit``
say. Estimates come from headers and arguments (voxels, coils, pixels, lattice points) and from the
sizes a model asks for while it is built (:func:`allocation_guard`), never from the allocation itself.

torch is imported only by :func:`allocation_guard`, so that budgets are checked (and headers refused) without it.
"""

from __future__ import annotations

import math
import os
import re
import resource
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from medinr.errors import MedinrError

ENV_VAR = "MEDINR_MEMORY_LIMIT"
#: Share of the memory still available that one run may plan to use.
AVAILABLE_SHARE = 0.8
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_override: int | None = None
_unlimited = False


def parse_memory_size(text: str) -> int | None:
    """``'1.5G'``, ``'512MiB'``, ``'2e9'`` -> bytes (K/M/G/T count in 1024s); ``'none'`` -> None (no limit)."""
    t = str(text).strip().lower()
    if t in ("none", "off", "unlimited"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)(?:i?b)?", t)
    if not m:
        raise MedinrError(f"memory size '{text}' is not a size like 512M, 4G or 'none'")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value < 1 << 20:
        raise MedinrError(f"memory size '{text}' is below 1 MiB")
    return int(value)


def set_memory_budget(size: int | None) -> None:
    """Fix the budget for this process (bytes; None: no limit), as ``--memory-limit`` does."""
    global _override, _unlimited
    _override, _unlimited = size, size is None


@contextmanager
def memory_budget_set_to(size: int | None) -> Iterator[None]:
    """:func:`set_memory_budget` inside the block only (one CLI command)."""
    global _override, _unlimited
    saved = _override, _unlimited
    set_memory_budget(size)
    try:
        yield
    finally:
        _override, _unlimited = saved


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def available_memory() -> int | None:
    """Bytes this process can still allocate: machine, cgroup and rlimit taken together (None: unknown)."""
    limits = []
    avail = _meminfo("MemAvailable")
    if avail is not None:
        limits.append(avail)
    cg_max, cg_now = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cg_max is not None and cg_now is not None:
        limits.append(max(cg_max - cg_now, 0))
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(max(soft - _vm_size(), 0) if which == resource.RLIMIT_AS else soft)
    return min(limits) if limits else None


def memory_budget() -> int | None:
    """The bytes a run may plan to allocate (None: no limit). See the module docstring."""
    if _unlimited:
        return None
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR)
    if env:
        return parse_memory_size(env)
    avail = available_memory()
    return int(avail * AVAILABLE_SHARE) if avail is not None else None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"


def check_budget(nbytes: float, what: str, share: float = 1.0) -> None:
    """Refuse, with one line, work whose estimated memory exceeds ``share`` of the budget.

    Parameters
    ----------
    nbytes : float
        Estimated peak bytes of the work.
    what : str
        What needs the memory, e.g. ``"a 16384x16384 render"``.
    share : float
        Part of the budget this piece may take (0 < share <= 1).
    """
    budget = memory_budget()
    if budget is None or nbytes <= budget * share:
        return
    raise MedinrError(
        f"{what} would need about {format_bytes(nbytes)} of memory, more than the budget of "
        f"{format_bytes(budget * share)}; make it smaller or raise the budget with --memory-limit "
        f"(or {ENV_VAR})"
    )


def array_bytes(shape: Sequence[int], itemsize: int = 4) -> int:
    """Bytes of a dense array (Python integers: no overflow for hostile shapes)."""
    return math.prod(int(s) for s in shape) * int(itemsize)


# -- the sizes a constructor asks torch for, checked before each allocation ------------------------------------
_SIZED = {"empty", "zeros", "ones", "rand", "randn", "full", "randint", "normal", "empty_strided",
          "new_empty", "new_zeros", "new_ones", "new_full"}


def _numel(func: Any, args: tuple, kwargs: dict) -> int:
    """Elements a torch factory call will create, from its arguments (0 for anything else)."""
    name = getattr(func, "__name__", "")
    if name in ("eye",):
        n = int(args[0]) if args else int(kwargs.get("n", 0))
        return n * int(args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("m", n) or n)
    if name in ("randperm",):
        return int(args[0]) if args else 0
    if name in ("linspace", "logspace"):
        return int(args[2]) if len(args) > 2 else int(kwargs.get("steps", 0))
    if name == "arange":
        nums = [float(a) for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        start, end, step = {1: (0.0, nums[0], 1.0), 2: (*nums, 1.0), 3: tuple(nums)}.get(len(nums), (0.0, 0.0, 1.0))
        return max(int(math.ceil((end - start) / step)), 0) if step and math.isfinite(end - start) else 0
    if name not in _SIZED:
        return 0
    size = kwargs.get("size")
    if size is None:
        if name in ("new_empty", "new_zeros", "new_ones", "new_full"):
            args = args[1:]  # the tensor the method is called on
        seqs = [a for a in args if isinstance(a, (tuple, list))]  # torch.Size is a tuple
        ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        if seqs:
            size = seqs[-1]
        elif name in ("empty", "zeros", "ones", "rand", "randn"):
            size = ints
        else:
            return 0
    return math.prod(int(s) for s in size)


def _allocation_guard_mode(limit: float, what: str) -> Any:
    """A torch function mode that counts the bytes of factory calls and refuses the one passing ``limit``."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _AllocationGuard(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            n = _numel(func, args, kwargs)
            if n:
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                self.total += n * dtype.itemsize
                if self.total > limit:
                    raise MedinrError(
                        f"{what} would need more than {format_bytes(limit)} of memory (the budget's share "
                        f"for it); use smaller options or raise the budget with --memory-limit (or {ENV_VAR})"
                    )
            return func(*args, **kwargs)

    return _AllocationGuard()


@contextmanager
def allocation_guard(what: str, share: float = 1.0) -> Iterator[None]:
    """Count the bytes torch factory calls ask for inside the block; refuse before the one that passes the budget.

    Meant around a model constructor: a hostile option (``hidden = 10**6``) is refused before its weight
    matrix exists. Calls made inside other torch functions are not seen (they are not factories of the block).
    """
    budget = memory_budget()
    if budget is None:
        yield
        return
    with _allocation_guard_mode(budget * share, what):
        yield
