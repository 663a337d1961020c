"""Light / Dark / System: an app palette that widgets and charts follow, remembered; a focus ring."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from senior_intern.gui import appearance


def _luminance(colour) -> float:
    return 0.299 * colour.red() + 0.587 * colour.green() + 0.114 * colour.blue()


def test_dark_mode_darkens_the_window_and_the_charts_and_is_remembered(window, settings):
    try:
        window.actions_["appearance_dark"].trigger()
        QApplication.processEvents()
        app_palette = QApplication.palette()
        assert _luminance(app_palette.color(QPalette.ColorRole.Base)) < 60
        assert _luminance(app_palette.color(QPalette.ColorRole.Text)) > 180
        histogram = window.train_page.dataset_panel.histogram
        assert _luminance(histogram.backgroundBrush().color()) < 60  # the chart followed the palette
        assert settings.value(appearance.SETTING) == "Dark" and window.appearance_mode() == "Dark"
        start = window.train_page.start_button
        assert start.isDefault() and "palette(highlight)" in start.styleSheet()
        window.actions_["appearance_light"].trigger()
        QApplication.processEvents()
        assert _luminance(histogram.backgroundBrush().color()) > 200
        assert window.actions_["appearance_light"].isChecked() and not window.actions_["appearance_dark"].isChecked()
    finally:
        window.set_appearance("System")
    assert QApplication.palette().color(QPalette.ColorRole.Base) == appearance.palette_for("System").color(QPalette.ColorRole.Base)


def test_unknown_modes_are_refused_with_the_choices():
    import pytest

    with pytest.raises(ValueError, match="System, Light, Dark"):
        appearance.palette_for("Sepia")
