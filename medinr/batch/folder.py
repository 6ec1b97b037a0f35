"""The batch folder ``--out DIR``: one published folder per case, ``status.jsonl``, ``summary.csv``, a lock.

Unlike a single command's output folder, a batch folder fills up case by case: each case's folder is published
atomically (:class:`medinr.outputs.OutputDir`), the records are appended. The folder must be new, empty, or hold
an earlier batch (its ``status.jsonl``), which is continued only with ``--resume`` or ``--force``. One batch at
a time writes into it (an exclusive lock on ``.medinr-batch.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from medinr.batch.status import STATUS_FILE
from medinr.errors import MedinrError
from medinr.outputs import MANIFEST, published_files, reclaim_leftovers, recorded_files
from medinr.textsafe import terminal_safe

LOCK_FILE = ".medinr-batch.lock"


def check_batch_folder(out: str | os.PathLike, resume: bool, force: bool) -> Path:
    """Refuse (one line) a ``--out`` a batch may not write into; returns its absolute path. Writes nothing."""
    raw = terminal_safe(out, limit=200)
    if not str(out).strip():
        raise MedinrError("--out is empty: name a folder for the batch")
    target = Path(os.path.abspath(out))
    cwd = Path.cwd()
    if target == cwd or target in cwd.parents:
        raise MedinrError(f"--out {raw} is the current folder or one above it: name a new folder for the batch")
    if os.path.lexists(target):
        if not target.is_dir():
            raise MedinrError(f"--out {raw} exists and is not a folder")
        entries = os.listdir(target)
        if entries and STATUS_FILE not in entries:
            raise MedinrError(f"--out {raw} holds files that are not a medinr batch's (e.g. "
                              f"'{terminal_safe(sorted(entries)[0], limit=60)}'); name a new or empty folder")
        if STATUS_FILE in entries and not (resume or force):
            raise MedinrError(f"--out {raw} holds an earlier batch: use --resume to run the cases that are not done, "
                              "or --force to run every case again")
        return target
    ancestor = target.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MedinrError(f"cannot create the batch folder {raw}: {terminal_safe(ancestor)} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise MedinrError(f"cannot create the batch folder {raw}: no permission to write in "
                          f"{terminal_safe(ancestor)}")
    return target


@contextlib.contextmanager
def locked(target: Path) -> Iterator[Path]:
    """Create the batch folder and hold its lock while the batch runs (a second batch into it is refused)."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd = os.open(target / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise MedinrError(f"cannot create the batch folder {terminal_safe(target)}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MedinrError(f"another medinr batch is writing to {terminal_safe(target)}; wait for it to end") \
                from None
        yield target
    finally:
        os.close(fd)


def case_state(folder: Path, expected: tuple[str, ...]) -> str:
    """'absent' (no folder), 'complete' (every file the run published still there and unchanged, ``expected``
    naming what a run of the case may write), 'partial' (a medinr output folder missing some) or 'foreign'
    (anything else in its place). A run writes a subset of ``expected`` (a Cartesian reconstruction no
    gridding image), so completeness is judged by what it recorded."""
    if not os.path.lexists(folder):
        return "absent"
    if not folder.is_dir() or folder.is_symlink():
        return "foreign"
    published = published_files(folder)
    if published and published == recorded_files(folder) and published & set(expected):
        return "complete"
    return "partial" if published or (folder / MANIFEST).is_file() else "foreign"


def reclaim(target: Path, case_ids: list[str]) -> None:
    """Remove the staging folders that killed attempts left beside the cases' folders (an interrupted batch's
    workers), unless a live process still holds one (:func:`medinr.outputs.reclaim_leftovers`)."""
    try:
        names = [e for e in os.listdir(target) if e.startswith(".") and ".medinr-" in e]
    except OSError:
        return
    for case_id in case_ids:
        if any(name.startswith(f".{case_id}.medinr-") for name in names):
            reclaim_leftovers(target / case_id)
