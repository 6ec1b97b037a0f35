"""napari plugin for medinr: open ``.inr`` checkpoints and browse them at any slice orientation and zoom.

Everything napari calls is declared in ``napari.yaml`` (npe2); the maths lives in :mod:`medinr.render`.
"""

__all__: list[str] = []
