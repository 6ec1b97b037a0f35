"""Qt views of the slicer (napari-animation's layout: small widgets over a Qt-free, evented model)."""

from napari_plugin._qt._widget import SliceWidget

__all__ = ["SliceWidget"]
