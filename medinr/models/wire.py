"""WIRE (Saragadam et al., 2023): an MLP with complex Gabor wavelet activations, written in real arithmetic."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from medinr.models.base import INR, register_model
from medinr.models.config import FamilyConfig, option

# exp(x) for x below this is a float32 denormal-range value (< 1.2e-38); the Gaussian envelope reaches it far
# from the wavelet's centre. Denormal arithmetic is 10-100x slower on x86 and made the backward pass ~4x slower
# (REFERENCE.md), so the exponent is floored here instead of flipping the process-wide
# torch.set_flush_denormal switch. The change is below 1e-35 in value and zeroes the gradient only there.
_MIN_EXPONENT = -80.0


def gabor(u: torch.Tensor, v: torch.Tensor | None, omega_0: float, s_0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex Gabor wavelet ``exp(j omega_0 z) exp(-|s_0 z|^2)`` of ``z = u + j v``, as (real, imaginary).

    With ``z = u + j v``: ``j omega_0 z = -omega_0 v + j omega_0 u``, so the modulus is
    ``exp(-omega_0 v - s_0^2 (u^2 + v^2))`` and the phase ``omega_0 u``. ``v=None`` means a real input.
    """
    if v is None:
        exponent = -(s_0 * s_0) * u.square()
    else:
        exponent = -omega_0 * v - (s_0 * s_0) * (u.square() + v.square())
    modulus = torch.exp(exponent.clamp_min(_MIN_EXPONENT))
    phase = omega_0 * u
    return modulus * torch.cos(phase), modulus * torch.sin(phase)


class ComplexLinear(nn.Module):
    """``W z + b`` with complex ``W``, ``b`` stored as real and imaginary parts (plain float state dict).

    The complex product is carried out as four real GEMMs, which keeps autograd in real arithmetic (faster on CPU
    than complex tensors and compilable). Real and imaginary parts start at U(-1/sqrt(n), 1/sqrt(n)), like
    PyTorch's default for ``nn.Linear``.
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight_real = nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound))
        self.weight_imag = nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound))
        self.bias_real = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))
        self.bias_imag = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))

    def forward(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_re = torch.addmm(self.bias_real, re, self.weight_real.T) - im @ self.weight_imag.T
        out_im = torch.addmm(self.bias_imag, re, self.weight_imag.T) + im @ self.weight_real.T
        return out_re, out_im


@dataclass(frozen=True)
class WireConfig(FamilyConfig):
    """WIRE's options and its defaults per task."""

    hidden: int = option(256, 1, 1 << 16, units="units",
                         doc="nominal width; layers hold int(hidden / sqrt(2)) complex units")
    layers: int = option(3, 0, 256, doc="Gabor layers including the real first one (0 and 1 both give one)")
    omega_0: float = option(20.0, 0, 1e4, doc="frequency of the first layer's wavelet")
    s_0: float = option(10.0, 0, 1e4, doc="Gaussian width factor of the first layer's wavelet")
    hidden_omega: float = option(20.0, 0, 1e4, doc="frequency of the hidden layers' wavelets")
    hidden_s: float = option(10.0, 0, 1e4, doc="Gaussian width factor of the hidden layers' wavelets")

    RATES: ClassVar[dict[str, float]] = {
        "image": 1e-3,  # image fits at 5e-3 (256 wide) stalled at 27 dB on the voxels, 12 dB between them
        "reconstruction": 5e-3,  # WIRE's general rate (the class notes: stable at omega / s = 2)
        "deformation": 5e-3,
    }
    SMOOTHNESS: ClassVar[float] = 0.1
    #: As SIREN (:attr:`~medinr.models.siren.SirenConfig.POINT_BATCH`): 2x zoom (``bench/models.py``'s cases, one
    #: session), 32768 -> 8192 points a step at the same points drawn: dipy coronal 18.50 -> 26.26 dB (cubic 37.14;
    #: 574 -> 610 CPU s), MNI axial 14.65 -> 21.11 (33.28; 484 -> 453 s), both with the paper's wavelets (the
    #: wavelets now: :meth:`task_options`).
    POINT_BATCH: ClassVar[int | None] = 1 << 13
    #: The Gabor wavelet's exp, cos and sin over four real GEMMs are many small element-wise passes that
    #: ``torch.compile`` fuses: a step of 8192 + 3072 points 92 -> 47 ms on 2 cores (5-8 s to compile with a warm
    #: cache; the first fit on a machine compiles from scratch: the dipy slice 133 s eager, 110 s cold, 98-100 warm).
    COMPILE_POINTS: ClassVar[bool] = True

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """Image: 128 nominal width (90 complex units), wavelets of omega 5 / s 2.5 on the first layer and 10 / 5
        on the hidden ones; other tasks: the constructor's defaults.

        The paper's 20 / 10 fits an image's own voxels but not between them (dipy coronal at 2x zoom: training
        34 dB, held-out voxels 20 dB, 11 dB under cubic interpolation; ``bench/models.py``'s cases, one session):
        its narrow Gaussian envelopes make localised bumps. Wider ones, dB under cubic on dipy: 10 / 5 on every
        layer -4.1, 5 / 2.5 on every layer -4.4 (held-out 32 dB, now under-fitting), 5 / 2.5 first and 10 / 5 hidden
        -3.1 (lr 3e-3: -3.0; 20 / 10 hidden: -4.9; 256 wide: -1.8 at 3.5x the time). The chosen pair on robex
        coronal (2 mm) -10.0 -> -0.04 dB, on MNI axial -2.2 (-12.2 in the last release's run of 20 / 10)."""
        if task != "image":
            return {}
        return {"hidden": 128, "omega_0": 5.0, "s_0": 2.5, "hidden_omega": 10.0, "hidden_s": 5.0}


@register_model("wire")
class Wire(INR):
    """WIRE: a real first layer, ``layers - 1`` complex hidden layers, each followed by a complex Gabor wavelet,
    and a complex linear head whose real part is the output.

    Parameters
    ----------
    in_features, out_features : int
    hidden : int
        Nominal width; the layers are ``int(hidden / sqrt(2))`` wide because a complex weight holds two reals,
        which keeps the parameter count close to a real MLP of width ``hidden`` (default 256 -> 181).
    layers : int
        Number of Gabor layers including the real first one (default 3).
    omega_0, s_0 : float
        Frequency and Gaussian width of the first layer's wavelet (default 20 and 10).
    hidden_omega, hidden_s : float
        The same for the complex hidden layers (default 20 and 10). WIRE on MRI turns NaN when omega / s
        grows beyond about 2; these defaults (ratio 2) fit the 256x256 coronal slice without diverging
        (300 Adam steps of 4096 random pixels at the default learning rate 5e-3: finite loss, 30.7 dB).
    """

    config_type = WireConfig

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 256,
        layers: int = 3,
        omega_0: float = 20.0,
        s_0: float = 10.0,
        hidden_omega: float = 20.0,
        hidden_s: float = 10.0,
    ) -> None:
        super().__init__(in_features, out_features)
        width = max(1, int(hidden / math.sqrt(2.0)))
        self.omega_0, self.s_0 = float(omega_0), float(s_0)
        self.hidden_omega, self.hidden_s = float(hidden_omega), float(hidden_s)
        self.first = nn.Linear(in_features, width)
        self.hidden_layers = nn.ModuleList(ComplexLinear(width, width) for _ in range(layers - 1))
        self.head = ComplexLinear(width, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        x = coords.reshape(-1, coords.shape[-1])
        re, im = gabor(self.first(x), None, self.omega_0, self.s_0)
        for layer in self.hidden_layers:
            re, im = gabor(*layer(re, im), self.hidden_omega, self.hidden_s)
        out, _ = self.head(re, im)
        return out.reshape(*lead, self.out_features)

    def zero_output_(self) -> None:
        # the output is the real part of the head: zeroing both its real and imaginary weights keeps it at 0
        with torch.no_grad():
            for p in self.head.parameters():
                p.zero_()
