"""The INR model zoo: every family is built by name from a plain config and shares one interface."""

# Importing the family modules registers them with build_model.
from medinr.models import conv_inr, encodings, kan, lattice, mrgrid, siren, wire  # noqa: E402,F401
from medinr.models.base import INR, MODEL_REGISTRY, build_model, register_model
from medinr.models.config import FamilyConfig, TaskDefaults
from medinr.models.tasks import task_defaults

__all__ = ["INR", "MODEL_REGISTRY", "FamilyConfig", "TaskDefaults", "build_model", "register_model", "task_defaults"]
