"""Image registration with an INR displacement field u(x) in world millimetres (x -> x + u(x))."""

from medinr.registration.register import PRESETS, RegistrationSettings, register
from medinr.registration.transform import Warper

__all__ = ["Warper", "RegistrationSettings", "register", "PRESETS"]
