"""medinr: implicit neural representations (INRs) for medical images.

Networks map coordinates to intensities or displacements so that an image becomes a continuous,
differentiable object that can be reconstructed, registered and viewed at any resolution.
"""

__version__ = "0.1.0"

from medinr.errors import MedinrError  # noqa: E402

__all__ = ["MedinrError", "__version__"]
