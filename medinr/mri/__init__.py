"""MRI physics and reconstruction: centred FFTs, sampling masks, coil maps, the SENSE operator, INR and CS recon."""

from medinr.mri.fft import fftc, ifftc
from medinr.mri.masks import SamplingMask, make_mask
from medinr.mri.operators import Linop, SenseOp

__all__ = ["fftc", "ifftc", "SamplingMask", "make_mask", "Linop", "SenseOp"]
