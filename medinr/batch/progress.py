"""What a running batch shows: one line per finished attempt, a progress bar on a terminal (cases done /
failed / running, time left), the Dask dashboard's address when there is one.

Lines go to stdout (a log when redirected); the bar to stderr, only when it is a terminal. Every string from a
case (its id, its summary, its error line) is printed through :func:`medinr.textsafe.terminal_safe`.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from medinr.textsafe import terminal_safe


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


class Progress:
    """Counts and shows a batch's progress (see the module docstring); ``quiet`` prints failures only."""

    def __init__(self, quiet: bool = False, out: TextIO | None = None, bar: TextIO | None = None) -> None:
        self.quiet = quiet
        self.out = out or sys.stdout
        self.bar_stream = bar or sys.stderr
        self.total = self.done = self.failed = self.running = 0
        self.started = time.monotonic()
        self.base = 0  # cases finished before the cluster started (refused options): not in the time left
        self.bar: Any = None

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def start(self, total: int, skipped: int) -> None:
        self.total, self.started = total, time.monotonic()
        if not self.quiet:
            note = f" ({skipped} complete with the same settings: skipped)" if skipped else ""
            self._print(f"{total} case{'s' if total != 1 else ''} to run{note}")
        if not self.quiet and total and _isatty(self.bar_stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", file=self.bar_stream, dynamic_ncols=True, leave=False)

    def connected(self, client: Any, describe: str = "") -> None:
        from medinr.batch.cluster import dashboard_link, worker_threads

        threads = worker_threads(client)
        self.started, self.base = time.monotonic(), self.done + self.failed
        if not self.quiet:
            link = dashboard_link(client)
            where = describe or f"{len(threads)} Dask worker{'s' if len(threads) != 1 else ''}"
            self._print(f"running on {where}" + (f"; dashboard: {terminal_safe(link)}" if link else ""))
        if any(n > 1 for n in threads.values()):
            print("medinr: warning: some Dask workers have more than one thread, so they run several cases at once "
                  "(start workers with --nthreads 1)", file=sys.stderr)

    def eta(self) -> str:
        finished = self.done + self.failed
        ran = finished - self.base
        if ran <= 0 or finished >= self.total:
            return ""
        left = (time.monotonic() - self.started) / ran * (self.total - finished)
        return f", about {_duration(left)} left"

    def update(self, record: dict, running: int) -> None:
        """Count a finished attempt's ``record`` (an empty one only refreshes the running count)."""
        self.running = running
        status = record.get("status")
        if status == "ok":
            self.done += 1
        elif status == "failed":
            self.failed += 1
        if status and (not self.quiet or status != "ok"):
            self._print(self._line(record))
        if self.bar is not None:
            if status in ("ok", "failed"):
                self.bar.update(1)
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, running {running}", refresh=True)

    def _line(self, record: dict) -> str:
        case = terminal_safe(record.get("case"), limit=80)
        seconds = record.get("seconds") or 0.0
        head = f"[{self.done + self.failed}/{self.total}] {case}: {record.get('status')} after {seconds:.1f} s"
        if record.get("status") == "crashed":
            head += f" (attempt {record.get('attempt')}, tried again)"
        detail = record.get("error") or record.get("summary") or ""
        return f"{head}{self.eta()}" + (f": {terminal_safe(detail, limit=400)}" if detail else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
