"""One case in a Dask worker: the same library call as the single command, with its threads, its memory budget
and a record of the attempt.

:func:`run_case` never raises for the case's own failure (bad input, a bug): that is the case's record, with
the one error line the single command would print, and it is not tried again. Only the death of the worker
process (killed, out of memory, a crash in native code) reaches the scheduler, which the batch then retries.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from medinr import __version__
from medinr.batch.status import key_metrics
from medinr.errors import MedinrError
from medinr.filecheck import detached_data_allowed
from medinr.outputs import OutputDir
from medinr.resources import ENV_VAR, format_bytes, memory_budget, memory_budget_set_to, parse_memory_size
from medinr.textsafe import terminal_safe

#: Share of a worker's memory limit a case may plan to use when it names no budget of its own (Dask pauses a
#: worker at 80 % of its limit and restarts it at 95 %).
WORKER_SHARE = 0.8
#: Seconds between two readings of the worker's resident memory.
MEMORY_POLL_S = 0.05
#: ``CaseTask.memory`` when the case gave no ``--memory-limit`` (a string: it survives pickling, unlike a sentinel)
DEFAULT_MEMORY = "default"


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker needs for one attempt of one case (pickled to it).

    Attributes
    ----------
    case_id, command : str
    request : Request
        The checked request (:mod:`medinr.apps.requests`), its paths absolute.
    out : str
        The case's output folder (``DIR/<case_id>``), published as one step.
    file_name : str or None
        A render's image file inside ``out`` (None: the app's own outputs, through :func:`medinr.apps.execute`).
    force : bool
        Replace earlier outputs in ``out``.
    threads : int
        Torch threads for the case.
    memory : int, None or str
        The case's ``--memory-limit`` (bytes, None for 'none'); :data:`DEFAULT_MEMORY` when it gave none.
    allow_detached : bool
        ``--allow-detached-data``.
    settings_hash : str
    attempt : int
    error_line : callable
        Turns an exception into the one line the single command prints (``medinr: error: ...``).
    """

    case_id: str
    command: str
    request: Any
    out: str
    file_name: str | None
    force: bool
    threads: int
    memory: Any
    allow_detached: bool
    settings_hash: str
    attempt: int
    error_line: Callable[[BaseException], str]

    def next_attempt(self) -> "CaseTask":
        return replace(self, attempt=self.attempt + 1)


def configure_threads(n: int) -> None:
    """Torch's intra-op threads for one case (Dask's nanny already sets OMP/MKL/OpenBLAS pools to 1), and the
    allocator policy of :mod:`medinr.runtime` in the worker process."""
    import torch

    from medinr.runtime import configure_allocator

    configure_allocator(keep_environment=False)  # over Dask's MALLOC_TRIM_THRESHOLD_ for its workers

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def worker_memory_limit() -> int | None:
    """The memory limit (bytes) of the Dask worker running this code; None outside a worker or if unlimited."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    return int(limit) if limit else None


def case_budget(memory: Any, limit: int | None) -> int | None:
    """The memory budget of a case on a worker with memory ``limit``: the case's own (``--memory-limit`` or
    ``$MEDINR_MEMORY_LIMIT``) if it fits the limit, otherwise refused; by default medinr's budget, capped at
    :data:`WORKER_SHARE` of the limit."""
    explicit = memory
    if explicit == DEFAULT_MEMORY and os.environ.get(ENV_VAR):
        explicit = parse_memory_size(os.environ[ENV_VAR])
    if explicit != DEFAULT_MEMORY:
        if explicit is not None and limit is not None and explicit > limit:
            raise MedinrError(f"the case's memory budget of {format_bytes(explicit)} is more than its worker's "
                              f"memory limit of {format_bytes(limit)}; lower --memory-limit or give the workers "
                              "more memory")
        return explicit
    default = memory_budget()
    if limit is None:
        return default
    share = int(limit * WORKER_SHARE)
    return share if default is None else min(default, share)


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except (ImportError, OSError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The worker's highest resident memory (bytes) while the block runs, polled every :data:`MEMORY_POLL_S`."""
    peak = [_rss()]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(MEMORY_POLL_S):
            peak[0] = max(peak[0], _rss())

    thread = threading.Thread(target=poll, name="medinr-peak-memory", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss())


def perform(task: CaseTask) -> Any:
    """The single command's library call: :func:`medinr.apps.execute` into ``task.out``; a render's image is
    published into the case folder the same way (staged, one rename)."""
    from medinr import apps

    if task.file_name is None:
        return apps.execute(task.request, task.out, task.force)
    with OutputDir(task.out, [task.file_name], force=task.force) as folder:
        result = apps.run(task.request)
        apps.publish_file(result, folder / task.file_name)
    return result


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def run_case(task: CaseTask) -> dict[str, Any]:
    """Run one attempt of a case; returns its status record (see :mod:`medinr.batch.status`)."""
    started, wall0 = datetime.now(UTC), time.perf_counter()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    record: dict[str, Any] = {"status": "ok", "error": None, "summary": None, "metrics": {}, "budget": None}
    with peak_memory() as peak, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            configure_threads(task.threads)
            record["budget"] = budget = case_budget(task.memory, worker_memory_limit())
            with memory_budget_set_to(budget), detached_data_allowed(task.allow_detached):
                result = perform(task)
            record["summary"] = terminal_safe(result.summary, limit=1000)
            record["metrics"] = key_metrics(task.command, result.record)
        except Exception as exc:  # the case's own failure: its one line, as the single command prints it
            record.update(status="failed", error=task.error_line(exc))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    held = list(dict.fromkeys(terminal_safe(w.message, limit=300) for w in caught))[:20]
    return {"time": started.isoformat(timespec="seconds"), "case": task.case_id, "command": task.command,
            "status": record["status"], "attempt": task.attempt, "seconds": time.perf_counter() - wall0,
            "cpu_seconds": cpu, "peak_memory_bytes": peak[0], "memory_budget_bytes": record["budget"],
            "worker": _worker_name(), "host": socket.gethostname(), "pid": os.getpid(), "threads": task.threads,
            "medinr_version": __version__, "settings_hash": task.settings_hash, "error": record["error"],
            "summary": record["summary"], "metrics": record["metrics"], "warnings": held}
