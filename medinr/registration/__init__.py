"""Image registration with an INR displacement field u(x) in world millimetres (x -> x + u(x))."""

from medinr.registration.register import PRESETS, RegistrationResult, RegistrationSettings, register
from medinr.registration.transform import DisplacementField, Warper

__all__ = ["DisplacementField", "Warper", "RegistrationResult", "RegistrationSettings", "register", "PRESETS"]
