"""Run a batch's cases on a Dask cluster: resume, submit, retry what a dead worker dropped, record, summarise.

The client keeps at most as many cases in flight as the cluster has worker threads (one case per worker at a
time), in manifest order. A case's own failure comes back as its record (:func:`medinr.batch.worker.run_case`)
and is final; a future that fails (its worker died: killed, out of memory, a native crash) is recorded as
``crashed`` and submitted again, up to ``retries`` times, then recorded as ``failed``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medinr import __version__
from medinr.batch import folder as batch_folder
from medinr.batch.progress import Progress
from medinr.batch.status import StatusLog, latest, read_status, summary_rows, write_summary
from medinr.batch.worker import CaseTask, run_case

#: Seconds the client waits for a result before it looks at the cluster again (workers come and go).
POLL_S = 0.5


@dataclass(frozen=True)
class Case:
    """One manifest row ready to run: ``task`` (None if it failed before running, with its ``error`` line) and
    the output names that make it complete."""

    index: int
    case_id: str
    command: str
    task: CaseTask | None
    error: str | None
    expected: tuple[str, ...] = ()
    settings_hash: str | None = None


@dataclass
class Outcome:
    """What a batch did: cases run, succeeded, failed and skipped (their ids)."""

    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def plan(cases: list[Case], out: Path, resume: bool, force: bool) -> tuple[list[Case], list[Case]]:
    """(to run, skipped). ``resume`` skips a case whose latest attempt succeeded with the same settings hash and
    whose outputs are all still there; one with the same settings but outputs missing is redone in place."""
    if not resume:
        return [_forced(c, force) for c in cases], []
    last = latest(read_status(out))
    run, skipped = [], []
    for case in cases:
        record = last.get(case.case_id, {})
        same = case.task is not None and record.get("status") == "ok" and \
            record.get("settings_hash") == case.settings_hash
        state = batch_folder.case_state(out / case.case_id, case.expected)
        if same and state == "complete":
            skipped.append(case)
        else:
            run.append(_forced(case, force or (same and state == "partial")))
    return run, skipped


def _forced(case: Case, force: bool) -> Case:
    if case.task is None or case.task.force == force:
        return case
    return replace(case, task=replace(case.task, force=force))


def early_failure(case: Case) -> dict[str, Any]:
    """The record of a case that failed before it could run (its options or request were refused)."""
    return {"time": datetime.now(UTC).isoformat(timespec="seconds"), "case": case.case_id,
            "command": case.command, "status": "failed", "attempt": 1, "seconds": 0.0, "cpu_seconds": 0.0,
            "peak_memory_bytes": None, "memory_budget_bytes": None, "worker": None, "host": None, "pid": None,
            "threads": None, "medinr_version": __version__, "settings_hash": case.settings_hash,
            "error": case.error, "summary": None, "metrics": {}, "warnings": []}


def lost_attempt(task: CaseTask, exc: BaseException, seconds: float, final: bool) -> dict[str, Any]:
    """The record of an attempt whose worker died."""
    worker = getattr(getattr(exc, "last_worker", None), "address", None)
    reason = type(exc).__name__
    error = (f"medinr: error: the worker running case {task.case_id} died ({reason}: killed, out of memory or a "
             f"crash){f' on each of its {task.attempt} attempts' if final else ''}")
    return {"time": datetime.now(UTC).isoformat(timespec="seconds"), "case": task.case_id,
            "command": task.command, "status": "failed" if final else "crashed", "attempt": task.attempt,
            "seconds": seconds, "cpu_seconds": None, "peak_memory_bytes": None, "memory_budget_bytes": None,
            "worker": worker, "host": None, "pid": None, "threads": task.threads, "medinr_version": __version__,
            "settings_hash": task.settings_hash, "error": error, "summary": None, "metrics": {}, "warnings": []}


def _slots(client: Any) -> int:
    from medinr.batch.cluster import worker_threads

    return max(sum(worker_threads(client).values()), 1)


def _result(future: Any) -> tuple[dict[str, Any] | None, BaseException | None]:
    """The attempt's record, or (None, why) when its worker died or the task was lost (an interrupt of the batch
    itself, Ctrl-C or SIGTERM, is not caught)."""
    try:
        return future.result(), None
    except (Exception, asyncio.CancelledError) as exc:  # KilledWorker, a cancelled or lost task
        return None, exc


def drive(client: Any, tasks: list[CaseTask], retries: int, on_record: Callable[[dict, int], None]) -> None:
    """Run ``tasks`` on ``client``'s cluster; ``on_record(record, running)`` gets every attempt's record."""
    from distributed import wait

    queue: deque[CaseTask] = deque(tasks)
    order = {t.case_id: i for i, t in enumerate(tasks)}
    token = f"{time.time_ns():x}"
    inflight: dict[Any, tuple[CaseTask, float]] = {}
    while queue or inflight:
        slots = _slots(client)
        while queue and len(inflight) < slots:
            task = queue.popleft()
            future = client.submit(run_case, task, key=f"medinr-case-{token}-{order[task.case_id]}-{task.attempt}",
                                   pure=False, priority=-order[task.case_id])
            inflight[future] = (task, time.monotonic())
        try:
            done = wait(list(inflight), timeout=POLL_S, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            done = set()
        for future in done:
            task, start = inflight.pop(future)
            record, error = _result(future)
            future.release()
            if record is None:
                final = task.attempt > retries
                record = lost_attempt(task, error, time.monotonic() - start, final)
                if not final:
                    queue.appendleft(task.next_attempt())
            on_record(record, len(inflight))
        if not done:
            on_record({}, len(inflight))


def run_batch(cases: list[Case], out: Path, connect: Callable[[], AbstractContextManager], *, retries: int,
              resume: bool, force: bool, progress: Progress) -> Outcome:
    """Run (or resume) ``cases`` into the batch folder ``out``; ``connect()`` gives a Dask client when work is
    left. Writes ``status.jsonl`` (one line per attempt) and ``summary.csv``."""
    start = time.monotonic()
    outcome = Outcome()
    with batch_folder.locked(out):
        batch_folder.reclaim(out, [c.case_id for c in cases])
        log = StatusLog(out)
        to_run, skipped = plan(cases, out, resume, force)
        outcome.skipped = [c.case_id for c in skipped]
        progress.start(len(to_run), len(skipped))

        def record(rec: dict, running: int) -> None:
            if rec:
                log.append(rec)
                if rec["status"] != "crashed":
                    (outcome.ok if rec["status"] == "ok" else outcome.failed).append(rec["case"])
            progress.update(rec, running)

        try:
            for case in (c for c in to_run if c.task is None):
                record(early_failure(case), 0)
            tasks = [c.task for c in to_run if c.task is not None]
            if tasks:
                with connect() as client:
                    progress.connected(client)
                    drive(client, tasks, retries, record)
        finally:
            progress.close()
            write_summary(out, summary_rows(read_status(out), [(c.case_id, c.command) for c in cases]))
    outcome.seconds = time.monotonic() - start
    return outcome

