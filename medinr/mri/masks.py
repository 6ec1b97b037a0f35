"""Cartesian sampling masks (1D random or equispaced lines, 2D Poisson-disc, a file), seeded, with their acceleration.

Axis convention: the first spatial axis is the readout (always fully sampled); 1D masks undersample the last
axis (phase encode); the 2D Poisson-disc mask undersamples both axes of a 2D slice or the two phase-encode
axes (the last two) of a 3D volume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinr.errors import MedinrError
from medinr.validation import require_binary

MASK_KINDS = ("random", "equispaced", "poisson")


@dataclass
class SamplingMask:
    """A boolean sampling pattern over the image grid (``True`` = acquired k-space sample).

    Attributes
    ----------
    mask : ndarray of bool, shape of the image
    kind : str
        'random', 'equispaced', 'poisson' or 'file'.
    acceleration : float or None
        The acceleration asked for (None for a mask file).
    center_fraction : float
        Fraction of the undersampled axis (or axes) kept fully sampled around k = 0.
    seed : int
    """

    mask: np.ndarray
    kind: str
    acceleration: float | None
    center_fraction: float
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved_acceleration(self) -> float:
        """Number of grid points over number of acquired points."""
        return float(self.mask.size) / float(self.mask.sum())

    @property
    def calibration_width(self) -> int:
        """Width (lines) of the fully sampled block around the centre of the last axis."""
        return fully_sampled_center(self.mask)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "acceleration_requested": self.acceleration,
            "acceleration_achieved": self.achieved_acceleration,
            "center_fraction": self.center_fraction,
            "calibration_lines": self.calibration_width,
            "seed": self.seed,
            **self.extra,
        }


def _check_args(n: int, acceleration: float, center_fraction: float) -> int:
    if not acceleration >= 1.0:
        raise MedinrError(f"--accel must be at least 1, got {acceleration}")
    if not 0.0 <= center_fraction <= 1.0:
        raise MedinrError(f"--center-fraction must lie in [0, 1], got {center_fraction}")
    num_low = int(round(n * center_fraction))
    if num_low > n / acceleration + 1e-9:
        raise MedinrError(
            f"a centre of {num_low} lines already exceeds {n / acceleration:.1f} lines of a {acceleration}x mask; "
            "lower --center-fraction"
        )
    return num_low


def random_lines(n: int, acceleration: float, center_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """1D random line pattern with a fully sampled centre (fastMRI ``RandomMaskFunc`` semantics).

    ``round(n * center_fraction)`` centre lines are kept; every other line is equally likely, as in fastMRI,
    but exactly ``round(n / acceleration) - num_low`` of them are drawn (without replacement) so that the
    achieved acceleration matches the request instead of fluctuating with the draw.
    """
    num_low = _check_args(n, acceleration, center_fraction)
    lines = np.zeros(n, dtype=bool)
    pad = (n - num_low + 1) // 2
    lines[pad : pad + num_low] = True
    outer = np.flatnonzero(~lines)
    want = max(0, int(round(n / acceleration)) - num_low)
    lines[rng.choice(outer, size=min(want, outer.size), replace=False)] = True
    return lines


def equispaced_lines(n: int, acceleration: float, center_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """1D equispaced lines with a fully sampled centre and a random offset (fastMRI ``EquispacedMaskFunc``).

    The spacing is adjusted so that, counting the lines that fall inside the centre, about ``n / acceleration``
    lines are acquired.
    """
    num_low = _check_args(n, acceleration, center_fraction)
    lines = np.zeros(n, dtype=bool)
    pad = (n - num_low + 1) // 2
    lines[pad : pad + num_low] = True
    if n / acceleration - num_low > 1e-9:
        spacing = (n - num_low) / (n / acceleration - num_low)
        offset = int(rng.integers(0, max(1, int(round(spacing)))))
        lines[np.round(np.arange(offset, n, spacing)).astype(int).clip(0, n - 1)] = True
    return lines


def poisson_2d(shape: tuple[int, int], acceleration: float, center_fraction: float, seed: int) -> np.ndarray:
    """2D variable-density Poisson-disc pattern with a fully sampled calibration box (through SigPy)."""
    for n in shape:
        _check_args(n, acceleration, 0.0)
    try:
        import sigpy.mri
    except ImportError:
        raise MedinrError("the Poisson-disc mask needs SigPy, a dependency of medinr that is missing here: "
                          "pip install sigpy") from None
    calib = tuple(max(2, int(round(n * center_fraction))) for n in shape)
    if acceleration == 1:
        return np.ones(shape, dtype=bool)
    # SigPy's bisection on the density occasionally misses the target for a given seed: try a few more.
    for attempt in range(8):
        try:
            pattern = sigpy.mri.poisson(
                tuple(shape), acceleration, calib=calib, dtype=np.complex64, seed=seed + attempt
            )
            break
        except ValueError:
            continue
    else:
        raise MedinrError(f"cannot draw a {acceleration}x Poisson-disc mask on a {shape} grid; try another --accel")
    return np.abs(pattern) > 0


def make_mask(
    shape: tuple[int, ...],
    kind: str = "random",
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    seed: int = 0,
) -> SamplingMask:
    """Build a sampling mask for an image grid of ``shape`` (2D ``(i, j)`` or 3D ``(i, j, k)``).

    Parameters
    ----------
    shape : tuple of int
        Image (= k-space) grid.
    kind : {'random', 'equispaced', 'poisson'} or a path
        The pattern, or a mask file (``.npy`` or any image format) whose non-zero entries are acquired.
    acceleration : float
        Requested acceleration R (grid points / acquired points).
    center_fraction : float
        Fraction of the undersampled axis kept fully sampled around k = 0.
    seed : int
        Seed of the draw; the same seed gives the same mask.

    Returns
    -------
    SamplingMask

    Raises
    ------
    MedinrError
        For an unknown kind, impossible parameters, an unreadable or mis-shaped mask file, or a mask that
        samples nothing.
    """
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    if kind in ("random", "equispaced"):
        draw = random_lines if kind == "random" else equispaced_lines
        lines = draw(shape[-1], float(acceleration), float(center_fraction), rng)
        mask = np.broadcast_to(lines, shape).copy()
    elif kind == "poisson":
        if len(shape) == 2:
            mask = poisson_2d(shape, float(acceleration), float(center_fraction), seed)
        else:
            plane = poisson_2d(shape[1:], float(acceleration), float(center_fraction), seed)
            mask = np.broadcast_to(plane, shape).copy()
    else:
        if not (os.path.sep in kind or Path(kind).suffix):
            raise MedinrError(f"unknown mask '{kind}': choose random, equispaced, poisson or give a mask file")
        mask = load_mask_file(kind, shape)
        result = SamplingMask(mask, "file", None, 0.0, seed, extra={"file": str(kind)})
        return result
    if not mask.any():
        raise MedinrError("the sampling mask samples nothing")
    return SamplingMask(mask, kind, float(acceleration), float(center_fraction), seed)


def load_mask_file(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """Read a mask file and broadcast it to ``shape``.

    Accepted layouts: the full grid, a 1D line pattern over the last axis, or (for 3D) a 2D pattern over the
    last two axes. Values must be 0 (not acquired) or 1 (acquired): a mask of 0..255 is refused, not guessed.
    """
    p = Path(path)
    if not p.exists():
        raise MedinrError(f"mask file not found: {p}")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from medinr.io import load_image

            arr, _ = load_image(p)
    except MedinrError:
        raise
    except Exception as exc:
        raise MedinrError(f"cannot read mask file {p}: {exc}") from None
    return validate_mask(np.asarray(arr), shape, str(p))


def validate_mask(arr: np.ndarray, shape: tuple[int, ...], name: str = "the mask") -> np.ndarray:
    """Broadcast a mask to ``shape`` (full, last-axis lines, or last-two-axes plane) as bool; reject empty ones."""
    arr = np.squeeze(np.asarray(arr))
    if not np.all(np.isfinite(np.abs(arr))):
        raise MedinrError(f"{name} contains NaN or infinite values")
    require_binary(arr, name)
    if arr.shape == tuple(shape):
        mask = arr != 0
    elif arr.ndim == 1 and arr.shape[0] == shape[-1]:
        mask = np.broadcast_to(arr != 0, shape).copy()
    elif len(shape) == 3 and arr.shape == tuple(shape[1:]):
        mask = np.broadcast_to(arr != 0, shape).copy()
    else:
        raise MedinrError(f"{name} has shape {arr.shape}, which does not match the k-space grid {tuple(shape)}")
    if not mask.any():
        raise MedinrError(f"{name} samples nothing (all zeros)")
    return mask


def centre_box(shape: tuple[int, ...], widths: tuple[int, ...] | int) -> tuple[slice, ...]:
    """Slices of the box of ``widths`` per axis centred on k = 0 (index ``n // 2``, the centred FFT's origin).

    THE calibration box of medinr: mask statistics, ESPIRiT and the held-out split all slice it here.
    """
    widths = (widths,) * len(shape) if isinstance(widths, (int, np.integer)) else tuple(widths)
    return tuple(slice(n // 2 - w // 2, n // 2 - w // 2 + w) for n, w in zip(shape, widths))


def fully_sampled_center(mask: np.ndarray) -> int:
    """Width of the largest centred box (same width on every axis) in which every sample is acquired.

    For a 1D line mask this is the number of contiguous centre lines (capped by the grid); it is the
    calibration region that ESPIRiT can use.
    """
    mask = np.asarray(mask, dtype=bool)
    width = 0
    for w in range(1, min(mask.shape) + 1):
        if not mask[centre_box(mask.shape, w)].all():
            break
        width = w
    return width


def calibration_box(mask: np.ndarray, cap: int | None = 32) -> tuple[int, ...]:
    """Per-axis widths of a centred, fully sampled box, grown axis by axis from the largest centred square.

    A 1D line mask gives ``(min(cap, readout), centre lines)``: the readout is fully sampled, so the box is
    rectangular, which is what lets ESPIRiT calibrate from 10 lines. ``cap=None``: no cap (the whole
    calibration region, see :func:`calibration_region`).
    """
    mask = np.asarray(mask, bool)
    limit = max(mask.shape) if cap is None else cap
    widths = [min(fully_sampled_center(mask), limit)] * mask.ndim
    for axis in range(mask.ndim):
        while widths[axis] < min(limit, mask.shape[axis]):
            trial = list(widths)
            trial[axis] += 1
            if not mask[centre_box(mask.shape, tuple(trial))].all():
                break
            widths = trial
    return tuple(widths)


def calibration_region(mask: np.ndarray) -> np.ndarray:
    """Boolean map of the fully sampled centred box (uncapped): samples that calibrate, never validate."""
    mask = np.asarray(mask, bool)
    region = np.zeros_like(mask)
    region[centre_box(mask.shape, calibration_box(mask, cap=None))] = True
    return region & mask
