"""Robust intensity normalisation: fit in [0, ~1] by the 99.9th percentile, write back in input units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medinr.errors import MedinrError


@dataclass
class IntensityScale:
    """``normalised = (value - offset) / scale``; ``value = normalised * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def robust(cls, image: np.ndarray, percentile: float = 99.9) -> "IntensityScale":
        """Scale by the ``percentile`` of |image| (the offset stays 0 so that zero stays zero)."""
        mag = np.abs(np.asarray(image))
        if mag.size == 0 or not np.isfinite(mag).all():
            raise MedinrError("cannot normalise an image with NaN or infinite values")
        top = float(np.percentile(mag, percentile))
        if top <= 0:
            top = float(mag.max())
        if top <= 0:
            raise MedinrError("the image is entirely zero")
        return cls(scale=top, offset=0.0)

    def normalise(self, image: np.ndarray) -> np.ndarray:
        return (image - self.offset) / self.scale

    def restore(self, image: np.ndarray) -> np.ndarray:
        return image * self.scale + self.offset

    def to_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "offset": self.offset}
