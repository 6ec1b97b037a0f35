"""Window/level without Qt: the colour map, the default window and its presets, and the range a slider spans.

The default window of an intensity ignores the background: limits from the whole volume are dominated by air,
so white matter (the brightest brain tissue on T1) clipped. The foreground is what lies above Otsu's threshold;
the window then runs from the background level to the 99.9th percentile of the foreground. The slider range is
the data's own range, so any window inside the data can be set. Signed quantities are shown on diverging maps
centred on their neutral value (1 for a Jacobian, 0 for a displacement component); phase on a cyclic map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Name of the window when the user has set limits that match no preset.
CUSTOM = "custom"
#: Values sampled (a regular subsample) to estimate percentiles: the window must be cheap to compute.
SAMPLE_VALUES = 1 << 18


@dataclass(frozen=True)
class Display:
    """How a quantity is shown: colour map, window presets (the first is the default) and the data range."""

    colormap: str
    presets: dict[str, tuple[float, float]]
    data_range: tuple[float, float]
    default: str = field(default="")

    def __post_init__(self) -> None:
        if not self.default:
            object.__setattr__(self, "default", next(iter(self.presets)))

    @property
    def limits(self) -> tuple[float, float]:
        """The default window."""
        return self.presets[self.default]

    def slider_range(self, limits: tuple[float, float] | None = None) -> tuple[float, float]:
        """What a contrast slider spans: the data range, widened to hold ``limits`` (default: the default window)."""
        lo, hi = limits if limits is not None else self.limits
        return min(self.data_range[0], lo), max(self.data_range[1], hi)

    def preset_of(self, limits: tuple[float, float]) -> str:
        """The preset whose window is ``limits`` (to a thousandth of the range), else :data:`CUSTOM`."""
        tol = 1e-3 * max(self.data_range[1] - self.data_range[0], 1e-12)
        for name, (lo, hi) in self.presets.items():
            if abs(lo - limits[0]) <= tol and abs(hi - limits[1]) <= tol:
                return name
        return CUSTOM


def subsample(values: np.ndarray, count: int = SAMPLE_VALUES) -> np.ndarray:
    """Finite values of a regular subsample of ``values`` (at most about ``count``)."""
    stride = max(1, int(np.ceil((values.size / count) ** (1 / max(1, values.ndim)))))
    sample = values[(slice(None, None, stride),) * values.ndim]
    return sample[np.isfinite(sample)]


def foreground(values: np.ndarray) -> np.ndarray:
    """Values above Otsu's threshold (the tissue of a scan); all values when there is no two-class split."""
    from skimage.filters import threshold_otsu

    if values.size < 16 or float(values.min()) == float(values.max()):
        return values
    fg = values[values > threshold_otsu(values)]
    return fg if fg.size >= 0.005 * values.size else values


def intensity_presets(values: np.ndarray, data_range: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """Windows of an intensity (``values``: a sample of it): tissue (default), full range, grey/white contrast."""
    fg = foreground(values)
    background = float(np.percentile(values, 0.5))
    p25, p999 = (float(v) for v in np.percentile(fg, [25, 99.9]))
    presets = {
        "tissue": (background, p999),
        "full range": data_range,
        "grey/white": (p25, p999),
    }
    return {k: _non_empty(v) for k, v in presets.items()}


def display_for(kind: str, component: str | int, values: np.ndarray) -> Display:
    """Colour map, window presets and data range that suit a quantity (``values``: a sample of it, any shape)."""
    values = np.asarray(values)
    finite = subsample(values)
    if component == "phase":
        full = (-float(np.pi), float(np.pi))
        return Display("twilight", {"full circle": full}, full)
    if finite.size == 0:
        return Display("gray", {"full range": (0.0, 1.0)}, (0.0, 1.0))
    data_range = _non_empty((float(np.nanmin(values)), float(np.nanmax(values))))  # exact: the slider's ends
    if component == "jacobian" or (kind == "displacement" and isinstance(component, int)):
        centre = 1.0 if component == "jacobian" else 0.0
        half = max(float(np.percentile(np.abs(finite - centre), 99.5)), 1e-3)
        widest = max(abs(data_range[0] - centre), abs(data_range[1] - centre), half)
        presets = {"symmetric": (centre - half, centre + half), "full range": (centre - widest, centre + widest)}
        return Display("PiYG" if component == "jacobian" else "bwr", presets, data_range)
    return Display("magma" if kind == "displacement" else "gray", intensity_presets(finite, data_range), data_range)


def _non_empty(limits: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(limits[0]), float(limits[1])
    return (lo, hi) if hi > lo else (lo, lo + max(1.0, abs(lo)) * 1e-3)


class WindowLevel:
    """The window of the quantity on screen: its :class:`Display` (per component, once known) and the limits.

    A preset chosen by name, or limits set by hand (then named :data:`CUSTOM` unless they match a preset), stay
    until the component or the image changes: new frames of the same quantity never reset them.
    """

    def __init__(self) -> None:
        self.displays: dict[Any, Display] = {}
        self.component: Any = None
        self.limits: tuple[float, float] | None = None
        self.name = ""

    def reset(self) -> None:
        self.displays.clear()
        self.component, self.limits, self.name = None, None, ""

    @property
    def display(self) -> Display | None:
        return self.displays.get(self.component)

    def select(self, component: Any) -> bool:
        """Show ``component``; True if the window changed (its default window, when its display is known)."""
        if component == self.component:
            return False
        self.component = component
        shown = self.display
        self.limits, self.name = (shown.limits, shown.default) if shown is not None else (None, "")
        return True

    def learn(self, component: Any, display: Display) -> bool:
        """The display of ``component`` is known (computed in a worker); True if the window on screen changed."""
        self.displays[component] = display
        if component != self.component or self.name == CUSTOM:
            return False
        if self.name in display.presets:
            self.limits = display.presets[self.name]
        else:
            self.limits, self.name = display.limits, display.default
        return True

    def choose(self, name: str) -> bool:
        """Apply preset ``name``; False if there is no such preset for the quantity on screen."""
        shown = self.display
        if shown is None or name not in shown.presets:
            return False
        self.limits, self.name = shown.presets[name], name
        return True

    def set_limits(self, limits: tuple[float, float]) -> bool:
        """Limits set by hand (napari's slider); True if they differ from the current ones."""
        lo, hi = float(limits[0]), float(limits[1])
        if self.limits is not None and np.allclose(self.limits, (lo, hi)):
            return False
        self.limits = (lo, hi)
        shown = self.display
        self.name = shown.preset_of(self.limits) if shown is not None else CUSTOM
        return True
