"""Argument helpers the pipelines share (seed, device, output folder, model choice).

Nothing here imports torch at module level: arguments are parsed and checked without it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from medinr import jsonsafe
from medinr.errors import MedinrError
from medinr.resources import parse_memory_size
from medinr.textsafe import dumps_strict, terminal_safe


# -- validated argument types: a bad number is refused at parse time with one line (argparse exits with 2) ----
def _number(kind: type, low: float | None, high: float | None, low_open: bool, high_open: bool) -> Callable:
    def show(bound: float) -> str:
        return str(int(bound)) if kind is int else f"{bound:g}"

    def parse(text: str) -> float | int:
        shown = terminal_safe(text, limit=40)
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"'{shown}' is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{shown}' is not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{shown} must be {'>' if low_open else '>='} {show(low)}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"{shown} must be {'<' if high_open else '<='} {show(high)}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           integer: bool = False) -> Callable:
    """An argparse ``type=`` for a finite number in a range, e.g. ``number(0, 1, high_open=True)`` for [0, 1)."""
    return _number(int if integer else float, low, high, low_open, high_open)


positive_float = number(0, low_open=True)
nonnegative_float = number(0)
positive_int = number(1, integer=True)
nonnegative_int = number(0, integer=True)
#: A fraction of samples held out or kept: [0, 1).
fraction = number(0, 1, high_open=True)
#: An array axis: 0, 1 or 2.
axis_index = number(0, 2, integer=True)
#: Any finite number (an offset in mm).
finite_float = number()
#: A random seed: what NumPy, torch and Python all accept (issue 20: ``--seed 2**64`` was an internal error).
MAX_SEED = 2**32 - 1
seed_value = number(0, MAX_SEED, integer=True)
#: A signal-to-noise ratio in dB: from noise 300 times the signal to noise below float32 precision.
snr_db = number(-50, 150)
#: Points per optimisation step: 16 M already needs gigabytes of activations (``--batch-size 10**12``).
MAX_BATCH = 1 << 24
batch_size = number(1, MAX_BATCH, integer=True)
#: ``--device`` names medinr runs on.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d{1,3})?|mps")


def sizes(kind: type, low: float, high: float):
    """An argparse ``type=`` for 2 or 3 comma-separated numbers in ``[low, high]`` (``--matrix``, ``--fov``)."""
    one = number(low, high, integer=kind is int)

    def parse(text: str) -> tuple:
        parts = [t.strip() for t in text.split(",")]
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"'{terminal_safe(text, limit=40)}' is not 2 or 3 comma-separated sizes")
        return tuple(one(t) for t in parts)

    parse.__name__ = "sizes"
    return parse


#: ``--matrix`` and ``--fov`` of a non-Cartesian .npz (``reconstruct`` and ``info`` read the same files).
matrix_size = sizes(int, 4, 65536)
fov_size = sizes(float, 1e-3, 1e6)


def device_name(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked when parsed (no torch needed)."""
    name = str(text).strip().lower()
    if not DEVICE_PATTERN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"unknown device '{terminal_safe(text, limit=40)}' (cpu, cuda, cuda:N, "
                                         "mps or auto)")
    return name


def memory_size(text: str) -> int | None:
    """``--memory-limit 4G``: bytes (K/M/G/T in 1024s), or None for ``none``."""
    try:
        return parse_memory_size(text)
    except MedinrError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_common_arguments(parser: argparse.ArgumentParser, out: bool = True) -> None:
    if out:
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--seed", type=seed_value, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    parser.add_argument("--device", type=device_name, default="auto",
                        help="cpu, cuda, cuda:N, mps or auto (default: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_model_options(text: str | None) -> dict:
    """``--model-options '{"hidden": 128}'``: a JSON object of extra model options."""
    if not text:
        return {}
    value = jsonsafe.loads(text, "--model-options")
    if not isinstance(value, dict):
        raise MedinrError("--model-options must be a JSON object, e.g. '{\"hidden\": 128}'")
    for name in ("in_features", "out_features"):
        if name in value:
            raise MedinrError(f"--model-options cannot set {name}: it follows from the data")
    return value


def write_json(path, data: dict) -> None:
    """Write a metrics file as strict JSON: non-finite numbers become "inf", "-inf" or "nan" (see
    :mod:`medinr.textsafe`); numpy values become plain numbers."""
    text = dumps_strict(data, indent=2, sort_keys=True)
    with open(path, "w") as f:
        f.write(text + "\n")
