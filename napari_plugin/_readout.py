"""What the user reads, without Qt: the cursor read-out and the status lines of a slicer model (the functions
take the model as an argument and import nothing of it, so the two modules do not import each other)."""

from __future__ import annotations

from typing import Any

from napari_plugin._tiers import EXACT

SlicerModel = Any  # napari_plugin._slicer_model.SlicerModel

CONVENTION_TEXT = {
    "neurological": "neurological convention: the patient's right on screen right",
    "radiological": "radiological convention: the patient's right on screen left",
}


def cursor_text(model: SlicerModel) -> str:
    """RAS position (mm) of the point under the cursor on the plane on screen, and the value shown there.

    Both come from the frame on screen (its plane and its pixels), so the read-out never mixes a new plane with
    an old frame: after a change without a mouse move it follows as soon as the new frame is shown.
    """
    if model.image is None or model.cursor_rc is None:
        return ""
    tile = model.tile_at(model.cursor_rc)
    shown = None if tile is None else model.log.shown.get(tile.key)
    if shown is None:
        return ""
    world = shown.request.world(model.cursor_rc)
    text = "RAS (" + ", ".join(f"{v:.1f}" for v in world) + ") mm"
    value = model.log.value_at(tile.key, model.cursor_rc)  # type: ignore[union-attr]
    if value is not None:
        text += f"  {model.controls.component}: {value:.4g}"
    return text


def status_text(model: SlicerModel) -> str:
    """The image, its lattice, the tier on screen, the screen convention and the last refused change."""
    if model.image is None:
        return "open a .inr checkpoint (drag and drop) or File > Open Sample > medinr INR viewer"
    lines = [model.image.describe()]
    if model.lattice is None:
        lines.append("cached lattice: building in the background...")
    else:
        lat = model.lattice
        lines.append(f"cached lattice: {'x'.join(map(str, lat.geometry.shape))} at {lat.spacing_mm:.3g} mm")
    shown = next(iter(model.log.shown.values()), None)
    if shown is not None:
        tier = "exact (network at every pixel)" if shown.tier == EXACT else "cached lattice (interpolated)"
        lines.append(f"on screen: {tier}, pixels of {min(shown.request.scale):.3g} mm, {shown.seconds * 1000:.0f} ms")
    if model.image.ndim == 3:
        lines.append(CONVENTION_TEXT[model.controls.convention])
    if model.error:
        lines.append(f"error: {model.error}")
    return "\n".join(lines)
