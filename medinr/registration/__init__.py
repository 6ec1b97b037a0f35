"""Image registration with an INR displacement field u(x) in world millimetres (x -> x + u(x))."""

from medinr.registration.register import PRESETS, RegistrationSettings, register, register_with_inverse
from medinr.registration.transform import Warper

__all__ = ["Warper", "RegistrationSettings", "register", "register_with_inverse", "PRESETS"]
