"""The manifest of a batch: one row per case, read strictly, every problem listed at once.

A manifest is a CSV file with the columns ``case_id``, ``command`` and ``args`` (a header row first; rows whose
first cell starts with ``#`` and blank rows are skipped), or JSON lines (``.jsonl``/``.ndjson``, or a file whose
first character is ``{``) with the same three keys, ``args`` a string or a list of strings. ``args`` is the rest
of the command line a user would type for that case, split as a POSIX shell does (:func:`shlex.split`).

Read as text from a file the user names, so it follows the safety contract: a size limit before it is read,
UTF-8 only, no NUL bytes, bounded fields and rows, JSON through :mod:`medinr.jsonsafe` (depth 2), case ids that
are safe folder names, and every string shown to a terminal passed through :mod:`medinr.textsafe`.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from medinr import jsonsafe
from medinr.errors import MedinrError
from medinr.textsafe import terminal_safe

#: The commands a case may run.
COMMANDS = ("fit", "reconstruct", "register", "render")
COLUMNS = ("case_id", "command", "args")
#: Largest manifest read (bytes), most cases, longest field or JSON line (characters), most arguments per case.
MAX_BYTES = 32 << 20
MAX_ROWS = 100_000
MAX_FIELD = 64 << 10
MAX_ARGS = 512
#: Longest case id (characters; its UTF-8 bytes must also leave room for a staging folder's name).
MAX_ID_CHARS, MAX_ID_BYTES = 128, 200
#: Names the batch folder itself uses.
RESERVED_IDS = ("status.jsonl", "summary.csv")
_NOT_PORTABLE = set('/\\:*?"<>|')
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Row:
    """One case of a manifest: where it was written (``line``), its id, its command and its arguments."""

    line: int
    case_id: str
    command: str
    args: tuple[str, ...]


class ManifestError(MedinrError):
    """A manifest that cannot be run: ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)
        self.problems = problems


def show(text: object, limit: int = 80) -> str:
    """A string from the manifest as it may be printed: quoted, control characters escaped, cut to ``limit``."""
    return "'" + terminal_safe(text, limit=limit) + "'"


def case_id_problem(case_id: str) -> str | None:
    """Why ``case_id`` is not a safe folder name for a case's outputs, or None if it is one."""
    if not case_id:
        return "the case_id is empty"
    if len(case_id) > MAX_ID_CHARS or len(case_id.encode("utf-8", "replace")) > MAX_ID_BYTES:
        return f"the case_id {show(case_id, 40)} is longer than {MAX_ID_CHARS} characters ({MAX_ID_BYTES} bytes)"
    if not case_id.isprintable() or any(c.isspace() for c in case_id):
        return f"the case_id {show(case_id)} holds a control character or white space"
    if "/" in case_id or "\\" in case_id:
        return f"the case_id {show(case_id)} holds a path separator; it names one folder in the output folder"
    if ".." in case_id:
        return f"the case_id {show(case_id)} holds '..'"
    if set(case_id) & _NOT_PORTABLE:
        return f"the case_id {show(case_id)} holds one of {''.join(sorted(_NOT_PORTABLE))} (not portable in a name)"
    if not (case_id[0].isalnum() or case_id[0] == "_"):
        return f"the case_id {show(case_id)} must start with a letter, a digit or '_'"
    if case_id.casefold() in RESERVED_IDS:
        return f"the case_id {show(case_id)} is the name of a file the batch writes"
    return None


def _read_text(path: Path) -> str:
    """The manifest's text; one MedinrError line for a missing, special, oversized, binary or non-UTF-8 file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise MedinrError(f"cannot read the manifest {terminal_safe(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MedinrError(f"the manifest {terminal_safe(path)} is not a regular file")
    if info.st_size > MAX_BYTES:
        raise MedinrError(f"the manifest {terminal_safe(path)} has {info.st_size} bytes (at most {MAX_BYTES})")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise MedinrError(f"the manifest {terminal_safe(path)} grew beyond {MAX_BYTES} bytes while it was read")
    if b"\0" in data:
        raise MedinrError(f"the manifest {terminal_safe(path)} holds NUL bytes: it is not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MedinrError(f"the manifest {terminal_safe(path)} is not UTF-8 text (byte {exc.start})") from None


def _split_args(value: object, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            problems.append(f"{where}: 'args' must be a string or a list of strings")
            return None
        tokens = list(value)
    elif isinstance(value, str):
        try:
            tokens = shlex.split(value, comments=False, posix=True)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            problems.append(f"{where}: cannot split args {show(value, 60)}: {str(exc).lower()}")
            return None
    else:
        problems.append(f"{where}: 'args' must be a string or a list of strings")
        return None
    if len(tokens) > MAX_ARGS:
        problems.append(f"{where}: {len(tokens)} arguments (at most {MAX_ARGS})")
        return None
    return tuple(tokens)


def _row(line: int, fields: dict[str, object], where: str, problems: list[str]) -> Row | None:
    case_id, command = fields.get("case_id"), fields.get("command")
    before = len(problems)
    if not isinstance(case_id, str) or not isinstance(command, str):
        problems.append(f"{where}: 'case_id' and 'command' must be strings")
        return None
    case_id, command = case_id.strip(), command.strip()
    problem = case_id_problem(case_id)
    if problem:
        problems.append(f"{where}: {problem}")
    if command not in COMMANDS:
        problems.append(f"{where}: unknown command {show(command, 40)} (one of {', '.join(COMMANDS)})")
    args = _split_args(fields.get("args", ""), where, problems)
    if len(problems) > before or args is None:
        return None
    return Row(line, case_id, command, args)


def _csv_rows(text: str, name: str, problems: list[str]) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[Row] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if any(len(c) > MAX_FIELD for c in cells):
                problems.append(f"{name} line {line}: a field longer than {MAX_FIELD} characters")
                continue
            if header is None:
                header = _header(cells, name, line, problems)
                if header is None:
                    return []
                continue
            if len(cells) != len(header):
                problems.append(f"{name} line {line}: {len(cells)} fields, the header has {len(header)}")
                continue
            row = _row(line, dict(zip(header, cells)), f"{name} line {line}", problems)
            rows += [row] if row else []
            if len(rows) > MAX_ROWS:
                problems.append(f"{name}: more than {MAX_ROWS} cases")
                return rows
    except csv.Error as exc:
        problems.append(f"{name} line {reader.line_num}: not valid CSV ({exc})")
    if header is None and not problems:
        problems.append(f"{name}: no header row ({', '.join(COLUMNS)})")
    return rows


def _header(cells: list[str], name: str, line: int, problems: list[str]) -> list[str] | None:
    header = [c.strip() for c in cells]
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        detail = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and unknown else "") + (
            f"unknown {', '.join(show(c, 30) for c in unknown)}" if unknown else "")
        problems.append(f"{name} line {line}: the header must name the columns {', '.join(COLUMNS)} once each "
                        f"({detail or 'a column named twice'})")
        return None
    return header


def _jsonl_rows(text: str, name: str, problems: list[str]) -> list[Row]:
    rows: list[Row] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        where = f"{name} line {line}"
        try:
            value = jsonsafe.loads(raw, where, max_depth=2, max_chars=MAX_FIELD)
        except MedinrError as exc:
            problems.append(str(exc))
            continue
        if not isinstance(value, dict) or set(value) - set(COLUMNS) or not {"case_id", "command"} <= set(value):
            problems.append(f"{where}: each line must be a JSON object with the keys {', '.join(COLUMNS)} "
                            "(args may be left out)")
            continue
        row = _row(line, value, where, problems)
        rows += [row] if row else []
        if len(rows) > MAX_ROWS:
            problems.append(f"{name}: more than {MAX_ROWS} cases")
            break
    return rows


def _duplicates(rows: list[Row], name: str, problems: list[str]) -> None:
    seen: dict[str, Row] = {}
    for row in rows:
        first = seen.setdefault(row.case_id.casefold(), row)
        if first is not row:
            same = "the case_id" if first.case_id == row.case_id else "a case_id differing only in case from"
            problems.append(f"{name} line {row.line}: {same} {show(row.case_id)} of line {first.line} (case ids "
                            "name folders, so they must be unique)")


def is_jsonl(path: Path, text: str) -> bool:
    """JSON lines by suffix, or (for other suffixes than .csv) by a first character ``{``."""
    suffix = path.suffix.lower()
    return suffix in JSONL_SUFFIXES or (suffix != ".csv" and text.lstrip().startswith("{"))


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """Read and check a manifest; returns its cases in order.

    Raises
    ------
    MedinrError
        One line for a file that cannot be read as a manifest at all (missing, not a regular file, over
        :data:`MAX_BYTES`, binary, not UTF-8); :class:`ManifestError` listing every problem of its rows (header,
        field sizes, JSON, case ids, duplicates, commands, arguments that a shell could not split).
    """
    p = Path(path)
    text = _read_text(p)
    name = terminal_safe(p.name, limit=60)
    problems: list[str] = []
    rows = (_jsonl_rows if is_jsonl(p, text) else _csv_rows)(text, name, problems)
    _duplicates(rows, name, problems)
    if not rows and not problems:
        problems.append(f"{name} holds no cases")
    if problems:
        raise ManifestError(problems)
    return rows
