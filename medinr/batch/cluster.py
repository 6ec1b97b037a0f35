"""Where a batch runs: Dask distributed on this machine, on an existing cluster, or as SLURM/PBS jobs.

``--scheduler`` takes

- ``local`` or ``local:N``: a :class:`distributed.LocalCluster` of N worker processes (default: the cores
  divided by the threads per case), one thread each;
- ``tcp://HOST:PORT`` (or ``tls://``): an existing scheduler (``dask scheduler`` and ``dask worker`` started by
  you, or by your site's tooling);
- ``slurm:KEY=VALUE,...`` or ``pbs:KEY=VALUE,...``: workers started as batch jobs by dask-jobqueue (the
  ``cluster`` extra). Keys: ``jobs`` (how many), ``cpus`` and ``memory`` per job, ``queue``, ``walltime``,
  ``account``, ``interface``, ``local_directory``. Each job runs ``cpus // threads-per-case`` workers of one
  thread each, so that every case gets its threads and no core runs two.

Every worker runs one case at a time (one Dask thread): a case sets its own torch threads and memory budget,
which are process-wide. For clusters the batch starts itself (local, SLURM, PBS), the scheduler gives up on a
task at the first death of its worker (``allowed-failures`` 0), so that the batch counts and records every
attempt itself (``--retries``); an external scheduler retries by its own configuration first.

Nothing here imports Dask until a cluster is asked for; a missing Dask is one clear line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from medinr.errors import MedinrError
from medinr.resources import parse_memory_size
from medinr.textsafe import terminal_safe

MISSING_DASK = ("medinr batch needs Dask distributed, which is not installed: pip install \"dask[distributed]\" "
                "(it comes with medinr unless it was removed)")
MISSING_JOBQUEUE = "--scheduler {kind}: needs dask-jobqueue: pip install \"medinr[cluster]\" (or dask-jobqueue)"
#: Keys of ``slurm:``/``pbs:`` specs; values are strings unless converted here.
JOB_KEYS = ("jobs", "cpus", "memory", "queue", "walltime", "account", "interface", "local_directory")
MAX_WORKERS = 4096
#: Dask settings for the clusters a batch starts (see the module docstring).
DASK_SETTINGS = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}
_ADDRESS = re.compile(r"(tcp|tls)://[A-Za-z0-9.\-_\[\]:]+:\d{1,5}")


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler``: ``kind`` is 'local', 'address', 'slurm' or 'pbs'."""

    kind: str
    workers: int | None = None
    address: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local cluster of {self.workers} workers" if self.workers else "a local cluster"
        if self.kind == "address":
            return f"the Dask scheduler at {self.address}"
        return f"{self.options.get('jobs', 1)} {self.kind.upper()} jobs"


def _job_options(kind: str, text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in JOB_KEYS or not value.strip():
            raise MedinrError(f"--scheduler {kind}: '{terminal_safe(item, limit=40)}' is not KEY=VALUE with a key "
                              f"of {', '.join(JOB_KEYS)}")
        options[key] = value.strip()
    for key in ("jobs", "cpus"):
        if key in options:
            if not options[key].isdigit() or not 1 <= int(options[key]) <= MAX_WORKERS:
                raise MedinrError(f"--scheduler {kind}: {key} must be an integer from 1 to {MAX_WORKERS}")
            options[key] = int(options[key])
    if "memory" in options:
        parse_memory_size(options["memory"])  # refused now, not when the first job is submitted
    return options


def parse_scheduler(text: str) -> SchedulerSpec:
    """Check ``--scheduler`` (see the module docstring) without importing Dask."""
    t = str(text).strip()
    kind, _, rest = t.partition(":")
    if kind == "local":
        if not rest:
            return SchedulerSpec("local")
        if not rest.isdigit() or not 1 <= int(rest) <= MAX_WORKERS:
            raise MedinrError(f"--scheduler local:N needs N from 1 to {MAX_WORKERS}, got '{terminal_safe(rest, 20)}'")
        return SchedulerSpec("local", workers=int(rest))
    if kind in ("tcp", "tls"):
        if not _ADDRESS.fullmatch(t):
            raise MedinrError(f"--scheduler '{terminal_safe(t, limit=60)}' is not an address like tcp://HOST:PORT")
        return SchedulerSpec("address", address=t)
    if kind in ("slurm", "pbs"):
        return SchedulerSpec(kind, options=_job_options(kind, rest))
    raise MedinrError(f"--scheduler '{terminal_safe(t, limit=60)}': use local, local:N, tcp://HOST:PORT, "
                      "slurm:KEY=VALUE,... or pbs:KEY=VALUE,...")


def require_distributed() -> Any:
    """The ``distributed`` module, or one clear line if it is missing."""
    try:
        import distributed
    except ImportError:
        raise MedinrError(MISSING_DASK) from None
    return distributed


def local_workers(spec: SchedulerSpec, threads: int) -> int:
    """Workers of a local cluster: as asked, or the usable cores divided by the threads per case (at least 1)."""
    if spec.workers:
        return spec.workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // threads)


def jobqueue_cluster(spec: SchedulerSpec, threads: int) -> Any:
    """A dask-jobqueue cluster of ``jobs`` jobs, each ``cpus`` cores and ``memory``, one-thread workers of
    ``threads`` cores each (not yet scaled)."""
    try:
        import dask_jobqueue
    except ImportError:
        raise MedinrError(MISSING_JOBQUEUE.format(kind=spec.kind)) from None
    o = dict(spec.options)
    cpus = o.pop("cpus", threads)
    o.pop("jobs", None)
    workers = max(1, cpus // threads)
    memory = o.pop("memory", f"{4 * cpus}GB")
    common = {"cores": workers, "processes": workers, "memory": memory, "scheduler_options": {
        "dashboard_address": ":8787" if dashboard_available() else None}, **o}
    if spec.kind == "slurm":
        return dask_jobqueue.SLURMCluster(job_cpu=cpus, **common)
    return dask_jobqueue.PBSCluster(resource_spec=f"select=1:ncpus={cpus}:mem={memory}", **common)


def dashboard_available() -> bool:
    """Dask's dashboard needs bokeh; without it there is no dashboard to link to."""
    return importlib.util.find_spec("bokeh") is not None


@contextlib.contextmanager
def quiet_dask_logs() -> Iterator[None]:
    """Dask's own log lines (a worker's death, a restart) stay out of the batch's output: its records say it."""
    loggers = [logging.getLogger(n) for n in ("distributed", "dask_jobqueue", "tornado")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _start_cluster(spec: SchedulerSpec, threads: int) -> Any:
    distributed = require_distributed()
    if spec.kind == "local":
        return distributed.LocalCluster(
            n_workers=local_workers(spec, threads), threads_per_worker=1, processes=True,
            dashboard_address=":8787" if dashboard_available() else None, silence_logs=logging.CRITICAL)
    cluster = jobqueue_cluster(spec, threads)
    cluster.scale(jobs=spec.options.get("jobs", 1))
    return cluster


@contextlib.contextmanager
def connect(spec: SchedulerSpec, threads: int) -> Iterator[Any]:
    """A :class:`distributed.Client` on the cluster ``spec`` names; a cluster started here is closed after."""
    distributed = require_distributed()
    import dask

    with quiet_dask_logs(), dask.config.set(DASK_SETTINGS), contextlib.ExitStack() as stack:
        if spec.kind == "address":
            try:
                client = distributed.Client(spec.address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise MedinrError(f"cannot reach the Dask scheduler at {spec.address}: "
                                  f"{terminal_safe(exc, limit=200)}") from None
        else:
            cluster = stack.enter_context(_start_cluster(spec, threads))
            client = distributed.Client(cluster)
        stack.enter_context(client)
        yield client


def dashboard_link(client: Any) -> str | None:
    """The Dask dashboard's address, when the scheduler serves one (its web server always runs; the dashboard's
    pages need bokeh there)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        # a lambda travels by value: the scheduler need not have medinr installed
        has_bokeh = client.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("bokeh") is not None)
    except Exception:  # a scheduler that does not answer this: no link
        return None
    return client.dashboard_link if has_bokeh else None


def worker_threads(client: Any) -> dict[str, int]:
    """Threads per worker address (a worker of more than one thread runs several cases at once)."""
    try:
        return dict(client.nthreads())
    except Exception:  # between a worker's death and its restart the scheduler may not answer at once
        return {}
