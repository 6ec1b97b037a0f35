"""MRI physics and reconstruction: centred FFTs, sampling masks, the held-out split, coil maps and noise, the SENSE
operator, the self-calibrated INR, CS baselines and the comparison of all methods (:mod:`medinr.mri.compare`)."""

from medinr.mri.fft import fftc, ifftc
from medinr.mri.holdout import holdout_split
from medinr.mri.masks import SamplingMask, centre_box, make_mask
from medinr.mri.operators import Linop, SenseOp

__all__ = ["fftc", "ifftc", "holdout_split", "SamplingMask", "centre_box", "make_mask", "Linop", "SenseOp"]
