"""npe2 reader: a drag-and-drop of a ``.inr`` checkpoint shows its volume (rendered at a bounded size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_plugin._layers import open_checkpoint


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple[Any, dict, str]]] | None:
    """Return the reader for ``.inr`` files, ``None`` for anything else (napari then asks other plugins)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(p).lower().endswith(".inr") for p in paths):
        return None
    return read_checkpoints


def read_checkpoints(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """Layer data for one or more checkpoints; a damaged file raises MedinrError with a one-line message."""
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[tuple[Any, dict, str]] = []
    for p in paths:
        layers += open_checkpoint(p)
    return layers
