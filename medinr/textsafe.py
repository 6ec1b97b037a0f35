"""Text that leaves medinr safely: strict JSON (no NaN or Infinity) and terminal-safe strings.

JSON has no NaN or infinity; Python writes them as bare ``NaN``/``Infinity``, which strict readers refuse.
medinr writes a non-finite number as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (what ``float()`` reads
back), e.g. the PSNR of an exact reconstruction is ``"inf"``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

#: How a non-finite float is written in medinr's JSON files.
NON_FINITE = {math.inf: "inf", -math.inf: "-inf"}


def _number(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    return NON_FINITE.get(value, value)


def strict_json_value(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NumPy scalars and arrays become Python numbers and lists, tuples lists, paths strings, keys strings;
    non-finite floats become ``"inf"``, ``"-inf"`` or ``"nan"``; anything else is written as ``float(x)``
    when that works and ``str(x)`` otherwise.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return {str(k): strict_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [strict_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json_value(value.tolist())
    if isinstance(value, np.generic):
        return strict_json_value(value.item())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return _number(float(value))
    except (TypeError, ValueError):
        return str(value)


def dumps_strict(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`strict_json_value` (never NaN/Infinity)."""
    return json.dumps(strict_json_value(value), allow_nan=False, **options)


def terminal_safe(text: Any, limit: int | None = None) -> str:
    """``text`` with every non-printable character (escapes, control codes, bidi overrides) written as ``\\x1b``
    or ``\\u202e``, so that a string from a file cannot move the cursor, recolour or retitle a terminal.

    ``limit`` cuts the result to that many characters (with an ellipsis).
    """
    s = str(text)
    if not s.isprintable():
        s = "".join(c if c.isprintable() else _escape(c) for c in s)
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 3, 0)] + "..."
    return s


def terminal_safe_lines(text: str) -> str:
    """:func:`terminal_safe` that keeps line breaks and tabs (for whole blocks of printed text)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else _escape(c) for c in text)


class TerminalSafeWriter:
    """A text stream that writes through :func:`terminal_safe_lines`: wrapped around ``sys.stdout`` by the CLI,
    so no path or string from a file printed by any command can reach the terminal as a control sequence.

    Every other attribute (``flush``, ``fileno``, ``isatty``, ``encoding``, ...) is the wrapped stream's.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(terminal_safe_lines(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
