"""Plots that follow the window's palette (light or dark), for every pyqtgraph plot of the app."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QWidget


def apply_palette(plot: pg.PlotWidget, palette: QPalette) -> None:
    """Background, axes, labels and title of ``plot`` in the palette's colours."""
    background = palette.color(QPalette.ColorRole.Base)
    text = palette.color(QPalette.ColorRole.Text)
    plot.setBackground(background)
    item = plot.getPlotItem()
    item.titleLabel.setText(item.titleLabel.text, color=text)
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(text)
        axis.setTextPen(text)


class PaletteFollower(QObject):
    """Re-applies the palette to some plots whenever ``owner``'s palette changes (system theme switch)."""

    def __init__(self, owner: QWidget, plots: list[pg.PlotWidget]) -> None:
        super().__init__(owner)
        self.owner, self.plots = owner, plots
        owner.installEventFilter(self)
        self.apply()

    def apply(self) -> None:
        """Style every plot with the owner's current palette."""
        for plot in self.plots:
            apply_palette(plot, self.owner.palette())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """React to palette changes of the owner; never consumes the event."""
        if watched is self.owner and event.type() == QEvent.Type.PaletteChange:
            self.apply()
        return False
