"""Light / Dark / System appearance, applied as an application palette that every widget and
chart follows (Qt's colour-scheme hint does nothing under X11; a palette works everywhere).
A clear focus ring marks the default button.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QPushButton

MODES = ("System", "Light", "Dark")
SETTING = "appearance/mode"
FOCUS_RING = ("QPushButton:default { border: 2px solid palette(highlight); border-radius: 4px; padding: 4px 12px; }"
              "QPushButton:default:focus { border: 3px solid palette(highlight); }"
              "QPushButton:default:disabled { border: 2px solid palette(mid); }")

# Palette role -> (Light, Dark) colour.
_COLOURS = {
    QPalette.ColorRole.Window: ("#f3f3f3", "#2b2b2b"),
    QPalette.ColorRole.WindowText: ("#1a1a1a", "#e6e6e6"),
    QPalette.ColorRole.Base: ("#ffffff", "#1f1f1f"),
    QPalette.ColorRole.AlternateBase: ("#f0f0f0", "#2f2f2f"),
    QPalette.ColorRole.Text: ("#1a1a1a", "#e6e6e6"),
    QPalette.ColorRole.Button: ("#e9e9e9", "#353535"),
    QPalette.ColorRole.ButtonText: ("#1a1a1a", "#e6e6e6"),
    QPalette.ColorRole.ToolTipBase: ("#ffffe1", "#3a3a3a"),
    QPalette.ColorRole.ToolTipText: ("#1a1a1a", "#e6e6e6"),
    QPalette.ColorRole.Highlight: ("#2f6fd0", "#3d7dd8"),
    QPalette.ColorRole.HighlightedText: ("#ffffff", "#ffffff"),
    QPalette.ColorRole.Link: ("#1f5fbf", "#6ea8ff"),
    QPalette.ColorRole.PlaceholderText: ("#808080", "#8a8a8a"),
    QPalette.ColorRole.BrightText: ("#c00000", "#ff6b6b"),
}
_system_palette: QPalette | None = None


def palette_for(mode: str) -> QPalette:
    """The palette of ``mode`` ("System" is the palette the platform gave at start-up)."""
    if mode not in MODES:
        raise ValueError(f"Unknown appearance {mode!r}: choose one of {', '.join(MODES)}.")
    global _system_palette
    if _system_palette is None:
        _system_palette = QPalette(QApplication.palette())
    if mode == "System":
        return QPalette(_system_palette)
    palette = QPalette(_system_palette)
    colours = {role: pair[mode == "Dark"] for role, pair in _COLOURS.items()}
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(colours[QPalette.ColorRole.PlaceholderText]))
    return palette


def apply(mode: str) -> None:
    """Set the application palette; widgets and the charts' PaletteFollowers repaint in it."""
    QApplication.instance().setPalette(palette_for(mode))


def focus_ring(button: QPushButton) -> None:
    """A clear ring in the highlight colour around a default button (thicker with focus).

    Set on the button, not the application: an application style sheet pins every widget's
    palette at polish time, and a later Light/Dark switch would no longer reach them.
    """
    button.setStyleSheet(FOCUS_RING)
