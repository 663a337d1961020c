"""The window fits the screen: a 1366x768 laptop sees Start, Load and Save without resizing."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QByteArray, QRect
from PySide6.QtWidgets import QPushButton, QWidget

from senior_intern.gui import screen_fit
from senior_intern.gui.main_window import MainWindow

LAPTOP = QRect(0, 0, 1366, 768)


def _on_screen(widget: QWidget, screen: QRect) -> bool:
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    return widget.isVisible() and screen.contains(QRect(top_left, widget.size()))


def test_clamp_rect_shrinks_and_moves_a_rect_inside_the_screen():
    assert screen_fit.clamp_rect(QRect(1900, 1000, 2400, 1300), LAPTOP) == LAPTOP
    assert screen_fit.clamp_rect(QRect(100, 50, 800, 600), LAPTOP) == QRect(100, 50, 800, 600)
    assert screen_fit.clamp_rect(QRect(1000, 500, 800, 600), LAPTOP) == QRect(566, 168, 800, 600)
    assert screen_fit.first_rect(QRect(0, 0, 3840, 2160)).size() == screen_fit.COMFORTABLE


@pytest.fixture
def laptop(monkeypatch):
    monkeypatch.setattr(screen_fit, "available_geometry", lambda widget=None: QRect(LAPTOP))
    return LAPTOP


def _window(qtbot, settings):
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def _close(win):
    win.runner.shutdown()
    win.playground_page.shutdown()
    win.tasks.wait()


def test_first_window_at_1366x768_shows_start_load_and_save(qtbot, settings, tiny_job, laptop):
    settings.set_last_job(tiny_job)
    win = _window(qtbot, settings)
    try:
        assert laptop.contains(win.frameGeometry())
        assert win.width() >= 1200 and win.height() >= 700  # the whole screen, not a small box
        for name in ("startButton", "loadButton", "saveButton", "datasetDropZone", "modelDropZone"):
            widget = win.findChild(QWidget, name)
            assert widget is not None and _on_screen(widget, laptop), name
        for name in ("pauseButton", "cancelButton"):
            assert win.findChild(QPushButton, name) is not None, name
    finally:
        _close(win)


def test_geometry_saved_on_a_large_screen_is_clamped_to_the_laptop(qtbot, settings, tiny_job, laptop):
    settings.set_last_job(tiny_job)
    big = QWidget()
    qtbot.addWidget(big)
    big.setGeometry(1800, 900, 2400, 1300)
    settings.set_geometry(big.saveGeometry())
    win = _window(qtbot, settings)
    try:
        assert laptop.contains(win.frameGeometry()), win.frameGeometry()
        assert _on_screen(win.train_page.start_button, laptop)
    finally:
        _close(win)


def test_unreadable_saved_geometry_gives_a_first_window(qtbot, settings, tiny_job, laptop):
    settings.set_last_job(tiny_job)
    settings.set_geometry(QByteArray(b"not a geometry"))
    win = _window(qtbot, settings)
    try:
        assert win.frameGeometry() == screen_fit.first_rect(laptop)
    finally:
        _close(win)
