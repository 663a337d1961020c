"""Place the main window on the screen it opens on: never larger than the screen, never off it.

A first start fills the screen's available area (up to a comfortable size on big screens); a
geometry saved on another, larger screen is shrunk and moved back inside the current one, so
the footer with Start is always visible on a 1366x768 laptop.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QRect, QSize
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

# On a large monitor a window filling the screen is too wide to read; this is enough for all pages.
COMFORTABLE = QSize(1600, 1000)


def available_geometry(widget: QWidget | None = None) -> QRect:
    """The available area (without task bars) of the screen ``widget`` is on, else of the primary."""
    screen = widget.screen() if widget is not None else None
    screen = screen or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else QRect(0, 0, 1280, 800)


def clamp_rect(rect: QRect, available: QRect) -> QRect:
    """``rect`` shrunk to fit ``available`` and moved inside it (keeping its place when it fits)."""
    width, height = min(rect.width(), available.width()), min(rect.height(), available.height())
    left = min(max(rect.left(), available.left()), available.right() + 1 - width)
    top = min(max(rect.top(), available.top()), available.bottom() + 1 - height)
    return QRect(left, top, width, height)


def first_rect(available: QRect) -> QRect:
    """The first window: the whole available area, capped at ``COMFORTABLE`` and centred."""
    size = available.size().boundedTo(COMFORTABLE)
    rect = QRect(0, 0, size.width(), size.height())
    rect.moveCenter(available.center())
    return clamp_rect(rect, available)


def place_window(window: QWidget, saved: QByteArray | None, available: QRect | None = None) -> QRect:
    """Restore ``saved`` (or size a first window) and keep the window frame inside the screen.

    Returns the frame rectangle that was set. ``available`` defaults to the window's screen.
    """
    available = available if available is not None else available_geometry(window)
    if saved is None or not window.restoreGeometry(saved):
        frame = first_rect(available)
    else:
        frame = clamp_rect(window.frameGeometry(), available)
    return _set_frame(window, frame)


def keep_on_screen(window: QWidget, available: QRect | None = None) -> QRect:
    """Shrink and move a shown window so its whole frame is inside the screen (call after show,
    when the window manager has added the title bar and borders)."""
    available = available if available is not None else available_geometry(window)
    return _set_frame(window, clamp_rect(window.frameGeometry(), available))


def _set_frame(window: QWidget, frame: QRect) -> QRect:
    # The frame (title bar, borders) is outside geometry(); before the first show it is unknown (0).
    extra_w = window.frameGeometry().width() - window.geometry().width()
    extra_h = window.frameGeometry().height() - window.geometry().height()
    window.resize(max(frame.width() - extra_w, 1), max(frame.height() - extra_h, 1))
    window.move(frame.topLeft())
    return frame
