"""The slicer's form: what the user sets (checkpoint, plane, zoom, quantity, convention, window, linked views,
deformed grid) and reads (tier on screen, cursor, status). It writes to the model and follows it: after every
accepted change the controls show the model's state, so they never disagree with the canvas; a refused change
(a zero normal) leaves the canvas as it was, marks the field and says why in the status.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QWidget

from medinr.render import CONVENTIONS, PLANE_PRESETS, components_of
from napari_plugin._slicer_model import SlicerModel
from napari_plugin._tiers import EXACT
from napari_plugin._window import CUSTOM

INVALID_STYLE = "QLineEdit { border: 1px solid #d04040; }"


class ControlsView(QWidget):
    """The dock's form over a :class:`SlicerModel`."""

    def __init__(self, model: SlicerModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._build()
        self._connect()
        self.sync()

    def _build(self) -> None:
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.source, self.preset, self.convention = QComboBox(), QComboBox(), QComboBox()
        self.preset.addItems(list(PLANE_PRESETS))
        self.convention.addItems(list(CONVENTIONS))
        self.convention.setToolTip("neurological: the patient's right on screen right; radiological: on the left")
        self.normal = QLineEdit()
        self.tilt_col, self.tilt_row = _spin(-90, 90, 1.0, " deg"), _spin(-90, 90, 1.0, " deg")
        self.offset = _spin(-1000, 1000, 1.0, " mm")
        self.zoom = _spin(0.05, 200, 0.25, "x", value=1.0)
        self.component, self.window_preset = QComboBox(), QComboBox()
        self.linked = QCheckBox("linked axial / coronal / sagittal views (click: crosshair)")
        self.grid = QCheckBox("deformed grid (registration)")
        self.tier, self.cursor, self.status = QLabel(""), QLabel(""), QLabel("")
        rows = [
            ("checkpoint", self.source),
            ("plane", self.preset),
            ("normal", self.normal),
            ("tilt about columns", self.tilt_col),
            ("tilt about rows", self.tilt_row),
            ("offset", self.offset),
            ("zoom", self.zoom),
            ("show", self.component),
            ("window", self.window_preset),
            ("convention", self.convention),
        ]
        for name, w in rows:
            form.addRow(name, w)
        for w in (self.linked, self.grid, self.tier, self.cursor, self.status):
            form.addRow(w)
        for label in (self.tier, self.cursor, self.status):
            label.setWordWrap(True)

    def _connect(self) -> None:
        update = self.model.update
        self.preset.currentTextChanged.connect(lambda text: update(preset=text))
        self.normal.editingFinished.connect(lambda: update(normal=self.normal.text().strip()))
        self.tilt_col.valueChanged.connect(lambda v: update(tilt_deg=(v, self.model.controls.tilt_deg[1])))
        self.tilt_row.valueChanged.connect(lambda v: update(tilt_deg=(self.model.controls.tilt_deg[0], v)))
        self.offset.valueChanged.connect(lambda v: update(offset_mm=v))
        self.component.currentTextChanged.connect(lambda text: text and update(component=text))
        self.convention.currentTextChanged.connect(lambda text: update(convention=text))
        self.linked.toggled.connect(lambda on: update(linked=on))
        self.grid.toggled.connect(lambda on: update(grid=on))
        self.window_preset.currentTextChanged.connect(self._on_window_preset)
        events = self.model.events
        events.views.connect(self.sync)
        events.image.connect(self.sync)
        events.error.connect(self._on_error)
        events.display.connect(self.sync_window)
        events.frame.connect(self._on_frame)
        events.cursor.connect(lambda text: self.cursor.setText(text))

    def _on_window_preset(self, name: str) -> None:
        if name and name != CUSTOM:
            self.model.choose_window(name)

    # -- following the model ---------------------------------------------------------------------------------
    def sync(self, *args: Any) -> None:
        """Show the model's controls (without sending them back)."""
        model, c = self.model, self.model.controls
        image = model.image
        three_d = image is not None and image.ndim == 3
        values = (
            (self.preset, c.preset),
            (self.convention, c.convention),
            (self.normal, c.normal),
            (self.tilt_col, c.tilt_deg[0]),
            (self.tilt_row, c.tilt_deg[1]),
            (self.offset, c.offset_mm),
            (self.linked, c.linked),
            (self.grid, c.grid),
        )
        for widget, value in values:
            _set_quietly(widget, value)
        names = components_of(image) if image is not None else []
        if [self.component.itemText(i) for i in range(self.component.count())] != names:
            self.component.blockSignals(True)
            self.component.clear()
            self.component.addItems(names)
            self.component.blockSignals(False)
        _set_quietly(self.component, str(c.component))
        single = three_d and not c.linked
        for w in (self.preset, self.normal, self.tilt_col, self.tilt_row, self.offset):
            w.setEnabled(single)
        self.convention.setEnabled(three_d)
        self.linked.setEnabled(three_d)
        self.grid.setEnabled(image is not None and image.kind == "displacement")
        if not model.error:
            self.normal.setStyleSheet("")
        self.normal.setPlaceholderText("NX,NY,NZ (a preset clears it)")
        self.status.setText(model.status())

    def sync_window(self) -> None:
        window = self.model.window
        shown = window.display
        names = [*shown.presets, CUSTOM] if shown is not None else []
        if [self.window_preset.itemText(i) for i in range(self.window_preset.count())] != names:
            self.window_preset.blockSignals(True)
            self.window_preset.clear()
            self.window_preset.addItems(names)
            self.window_preset.blockSignals(False)
        _set_quietly(self.window_preset, window.name)

    def _on_error(self, message: str) -> None:
        self.normal.setStyleSheet(INVALID_STYLE if message and "normal" in message else "")
        self.status.setText(self.model.status())

    def _on_frame(self, key: str) -> None:
        shown = self.model.log.shown.get(key)
        if shown is not None:
            tier = "exact (the network at every pixel)" if shown.tier == EXACT else "cached lattice (interpolated)"
            self.tier.setText(f"on screen: {tier}")
        self.status.setText(self.model.status())


def _set_quietly(widget: Any, value: Any) -> None:
    widget.blockSignals(True)
    try:
        if isinstance(widget, QComboBox):
            widget.setCurrentText(str(value))
        elif isinstance(widget, QLineEdit):
            if widget.text() != value:
                widget.setText(value)
        elif isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif widget.value() != value:
            widget.setValue(float(value))
    finally:
        widget.blockSignals(False)


def _spin(lo: float, hi: float, step: float, suffix: str, value: float = 0.0) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    spin.setSingleStep(step)
    spin.setSuffix(suffix)
    spin.setDecimals(2)
    spin.setKeyboardTracking(False)
    return spin
