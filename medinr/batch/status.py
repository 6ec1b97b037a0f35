"""What a batch records: one status line per attempt (``status.jsonl``), one summary row per case
(``summary.csv``), and the settings hash that ``--resume`` compares.

``status.jsonl`` is appended to, one JSON object per line, written with one ``write`` each (a killed batch
leaves at most a cut last line, which the reader skips). It keeps every attempt of every run into the folder;
the latest attempt of a case is its state. ``summary.csv`` is rewritten (atomically) at the end of each run from
the latest attempts of the manifest's cases.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medinr import jsonsafe
from medinr.errors import MedinrError
from medinr.textsafe import dumps_strict

STATUS_FILE = "status.jsonl"
SUMMARY_FILE = "summary.csv"
#: Longest status line read back (characters); longer lines are skipped.
MAX_STATUS_LINE = 1 << 20
#: Statuses of an attempt: ``ok``; ``failed`` (the case's own error, or the last crash); ``crashed`` (its worker
#: died and the case is tried again).
STATUSES = ("ok", "failed", "crashed")
SUMMARY_COLUMNS = ("case_id", "command", "status", "attempts", "seconds", "peak_memory_mib", "psnr", "ssim",
                   "psnr_tissue", "holdout_psnr", "dice", "dice_before", "tre_mm", "tre_before_mm", "ncc_after",
                   "folded_percent", "settings_hash", "error")


def _input_stats(value: Any, found: dict[str, list[int]]) -> None:
    """Size and modification time of every existing file an absolute path in ``value`` names."""
    if isinstance(value, Mapping):
        for item in value.values():
            _input_stats(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _input_stats(item, found)
    elif isinstance(value, str) and os.path.isabs(value) and value not in found:
        try:
            info = os.stat(value)
        except (OSError, ValueError):
            return
        found[value] = [info.st_size, info.st_mtime_ns]


def settings_hash(command: str, settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """A short hash of everything that decides a case's outputs: its command, its request's settings (the
    display-only ``progress`` left out) and the size and modification time of every input file it names.

    A changed option, a changed input file or a moved manifest (paths are absolute) changes the hash; the
    medinr version, the threads and the memory limit do not.
    """
    request = {k: v for k, v in settings.items() if k != "progress"}
    inputs: dict[str, list[int]] = {}
    _input_stats(request, inputs)
    text = dumps_strict({"command": command, "request": request, "inputs": inputs, **(extra or {})},
                        sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(numbers) / len(numbers) if numbers else None


def key_metrics(command: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers of a case's metrics.json that a cohort is compared on (the summary's columns)."""
    if command == "fit":
        m = record.get("metrics", {})
        return {"psnr": m.get("psnr"), "ssim": m.get("ssim"), "holdout_psnr": record.get("holdout_psnr")}
    if command == "reconstruct":
        inr = record.get("methods", {}).get("inr", {})
        return {"psnr": inr.get("psnr"), "ssim": inr.get("ssim"), "psnr_tissue": inr.get("psnr_tissue")}
    if command == "register":
        m = record.get("metrics", {})
        marks = m.get("landmarks", {})
        return {"dice": _mean(m.get("dice", {}).values()), "dice_before": _mean(m.get("dice_before", {}).values()),
                "tre_mm": marks.get("tre_mean_mm"), "tre_before_mm": marks.get("tre_before_mean_mm"),
                "ncc_after": m.get("ncc_after"), "folded_percent": m.get("jacobian", {}).get("folded_percent")}
    return {}


class StatusLog:
    """``DIR/status.jsonl``: :meth:`append` writes one attempt; :func:`read_status` reads them back."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / STATUS_FILE

    def append(self, record: Mapping[str, Any]) -> None:
        line = dumps_strict(record, sort_keys=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def read_status(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every attempt recorded in ``folder/status.jsonl``, in order; lines that are cut, too long or not JSON
    objects (a killed batch, a hand edit) are skipped."""
    path = Path(folder) / STATUS_FILE
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MedinrError(f"cannot read {path}: {exc.strerror}") from None
    records = []
    for line in lines:
        if not line.strip() or len(line) > MAX_STATUS_LINE:
            continue
        try:
            value = jsonsafe.loads(line, STATUS_FILE, max_depth=8, max_chars=MAX_STATUS_LINE)
        except MedinrError:
            continue
        if isinstance(value, dict) and isinstance(value.get("case"), str):
            records.append(value)
    return records


def latest(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each case's latest attempt."""
    return {r["case"]: r for r in records}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text  # no formulas in a spreadsheet


def summary_rows(records: list[Mapping[str, Any]], cases: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per case (``cases``: (case_id, command) in manifest order) from the latest of ``records``."""
    last = latest(records)
    rows = []
    for case_id, command in cases:
        r = last.get(case_id)
        if r is None:
            rows.append({"case_id": case_id, "command": command, "status": "not run"})
            continue
        peak = r.get("peak_memory_bytes")
        row = {"case_id": case_id, "command": command, "status": r.get("status"), "attempts": r.get("attempt"),
               "seconds": r.get("seconds"), "settings_hash": r.get("settings_hash"), "error": r.get("error"),
               "peak_memory_mib": peak / (1 << 20) if isinstance(peak, (int, float)) else None}
        metrics = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        rows.append(row | {k: v for k, v in metrics.items() if k in SUMMARY_COLUMNS})
    return rows


def write_summary(folder: str | os.PathLike, rows: list[Mapping[str, Any]]) -> bool:
    """Write ``folder/summary.csv`` (atomically); False if it already held exactly this (left untouched)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in SUMMARY_COLUMNS})
    path = Path(folder) / SUMMARY_FILE
    try:
        if path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8") == buffer.getvalue():
            return False
    except (OSError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(prefix=".summary-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(buffer.getvalue())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 is for a secret, not a spreadsheet
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True

