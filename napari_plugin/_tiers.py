"""The two tiers without Qt: computing a cached or an exact frame, when to ask for the exact one, which to keep.

Every view is drawn first from the cached lattice (interpolated, a few ms whatever the model) and then by the
network itself. :class:`RenderPolicy` decides when the exact frame starts: at once for a single change, only
after a short quiet period during a stream of changes (a drag, a wheel zoom: no exact render is started and
thrown away per step), and after a longer idle period when the lattice already holds the view's pixels.
:class:`FrameLog` keeps what is on screen per view: a cached frame of an older view is still shown while a
drag outruns the renders (something current beats nothing), an exact frame only if its view is current, and a
cached frame never replaces the exact frame of the same view.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.render import CachedLattice, exact_blocks
from napari_plugin._viewport import ViewRequest

LATTICE, EXACT = "lattice", "exact"


@dataclass(frozen=True)
class Shown:
    """A frame on screen: its tier, request, generation and how long it took (s)."""

    tier: str
    request: ViewRequest
    generation: int
    seconds: float


@dataclass
class RenderPolicy:
    """When the exact frame of a view starts (seconds after the change)."""

    #: A change closer than this to the previous one is part of a stream (drag, wheel, spin-box arrows).
    quiet_s: float = 0.15
    #: Quiet time before the exact frame of a view that the lattice already holds (pixels no finer than it).
    idle_s: float = 0.4
    last_change: float = -math.inf

    def change(self, now: float) -> bool:
        """Record a change at ``now`` (s); True if it continues a stream."""
        streaming = now - self.last_change < self.quiet_s
        self.last_change = now
        return streaming

    def exact_delay(self, streaming: bool, needs_exact: bool) -> float:
        if not needs_exact:
            return self.idle_s
        return self.quiet_s if streaming else 0.0


class FrameLog:
    """Generations of views and the frame on screen per view key."""

    def __init__(self) -> None:
        self.generation = 0
        self.floor = 0  # frames of generations before this belong to another image or layout
        self.shown: dict[str, Shown] = {}
        self.frames: dict[str, np.ndarray] = {}
        self.exact_count = 0
        self.fast_count = 0

    def begin(self) -> int:
        """A new view: exact renders started before it are stale from now on."""
        self.generation += 1
        return self.generation

    def reset(self) -> None:
        """Another image or layout: nothing computed before counts."""
        self.floor = self.begin()
        self.shown.clear()
        self.frames.clear()

    def is_current(self, generation: int) -> bool:
        return generation == self.generation

    def accept(self, generation: int, tier: str, request: ViewRequest, frame: np.ndarray, seconds: float) -> bool:
        """Record a finished frame; False: drop it (see the module docstring)."""
        if generation < self.floor or (tier == EXACT and not self.is_current(generation)):
            return False
        old = self.shown.get(request.key)
        if old is not None and (generation < old.generation or (generation == old.generation and old.tier == EXACT)):
            return False
        self.shown[request.key] = Shown(tier, request, generation, seconds)
        self.frames[request.key] = frame
        if tier == EXACT:
            self.exact_count += 1
        else:
            self.fast_count += 1
        return True

    def value_at(self, key: str, rc: tuple[float, float]) -> float | None:
        """The value on screen at canvas point ``rc`` of view ``key`` (None: no pixel there)."""
        shown, frame = self.shown.get(key), self.frames.get(key)
        if shown is None or frame is None:
            return None
        r, c = shown.request.pixel_of(rc)
        if 0 <= r < frame.shape[0] and 0 <= c < frame.shape[1]:
            return float(frame[r, c])
        return None


def fast_request(request: ViewRequest, lattice_step_mm: float) -> ViewRequest:
    """``request`` with pixels no finer than the lattice step: the cached tier holds no more detail, and fewer
    pixels keep its frame within a few milliseconds on any canvas (it is then upsampled; half the step cost six
    times as much for the 1 mm lattice of the sample on a 910 x 606 canvas, 23 ms instead of 4)."""
    step = lattice_step_mm
    size = (request.shape[0] * request.scale[0], request.shape[1] * request.scale[1])
    shape = tuple(max(1, min(n, int(np.ceil(extent / step)))) for n, extent in zip(request.shape, size))
    if shape == tuple(request.shape):
        return request
    scale = (size[0] / shape[0], size[1] / shape[1])
    translate = tuple(t - s0 / 2 + s1 / 2 for t, s0, s1 in zip(request.translate, request.scale, scale))
    return ViewRequest(request.plane, shape, scale, translate, request.key)  # type: ignore[arg-type]


def fast_frame(lattice: CachedLattice, request: ViewRequest, component: str | int) -> np.ndarray:
    """The cached-tier frame of ``request``, computed at :func:`fast_request` pixels and bilinearly upsampled to
    ``request.shape`` (so that the exact frame replacing it has the same pixels and only the data changes)."""
    small = fast_request(request, lattice.spacing_mm)
    frame = lattice.render(small.plane, small.shape, component)
    if small.shape == request.shape:
        return frame
    up = torch.nn.functional.interpolate(
        torch.from_numpy(frame)[None, None], size=tuple(request.shape), mode="bilinear", align_corners=False
    )
    return up[0, 0].numpy()


def exact_steps(image: ContinuousImage, request: ViewRequest, component: str | int) -> Generator[None, None, Any]:
    """The exact frame a band of rows at a time (yields between bands, so that a worker can stop)."""
    out = np.empty(request.shape, dtype=np.float32)
    for r0, rows in exact_blocks(image, request.plane, request.shape, component):
        out[r0 : r0 + rows.shape[0]] = rows
        yield None
    return out
