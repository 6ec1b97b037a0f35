"""Strict JSON reading for text that comes from a file or a command line: bounded size and depth, no duplicate
keys, no NaN or Infinity, no number that overflows.

Python's ``json`` accepts ``{"a": 1, "a": 2}`` (the last wins, silently), ``NaN`` and ``1e999`` (infinity), and
raises ``RecursionError`` (not a ``ValueError``) on deep nesting, after using the interpreter's whole stack.
:func:`loads` refuses all of these with one :class:`MedinrError` line before anything is built from the value.
The nesting depth is measured on the text, before parsing, so a 100,000-deep document costs one regular
expression scan. Used by checkpoint headers and lattice caches (:mod:`medinr.header`); meant for every JSON a
user hands to medinr (``--model-options``, sidecars).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from medinr.errors import MedinrError

#: Deepest nesting of objects and arrays accepted by default (a checkpoint header needs 4).
MAX_DEPTH = 32
#: Longest text accepted by default, characters.
MAX_CHARS = 4 << 20

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {_short(key)} appears twice in one object")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {_short(text)} is too large for a float")
    return value


def _no_constant(name: str) -> None:
    raise _Refused(f"{name} is not JSON; medinr writes non-finite numbers as \"inf\", \"-inf\" or \"nan\"")


class _Refused(ValueError):
    """Raised inside the decoder hooks; becomes one MedinrError line."""


def _short(text: str, limit: int = 40) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def loads(text: str | bytes, what: str, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS) -> Any:
    """Parse ``text`` as strict JSON.

    Parameters
    ----------
    text : str or bytes
        The JSON document (bytes are decoded as UTF-8).
    what : str
        What the text is, for the message (e.g. ``"model.inr has damaged metadata"``, ``"--model-options"``).
    max_depth : int
        Deepest nesting of objects and arrays accepted.
    max_chars : int
        Longest text accepted.

    Raises
    ------
    MedinrError
        One line ``"{what}: ..."`` for text that is too long or too deep, not JSON, holds a key twice in one
        object, a bare ``NaN``/``Infinity``, or a number beyond float range.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise MedinrError(f"{what}: the JSON is not UTF-8 text") from None
    if len(text) > max_chars:
        raise MedinrError(f"{what}: {len(text)} characters of JSON (at most {max_chars})")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise MedinrError(f"{what}: JSON nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite_float,
                          parse_constant=_no_constant)
    except _Refused as exc:
        raise MedinrError(f"{what} is not valid JSON ({exc})") from None
    except json.JSONDecodeError as exc:
        raise MedinrError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise MedinrError(f"{what} is not valid JSON (a number with too many digits)") from None
    except RecursionError:  # not reached within max_depth; kept so that no traceback can escape
        raise MedinrError(f"{what}: JSON nested too deeply") from None

