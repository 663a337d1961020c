"""Small reusable widgets: a path picker that accepts drops, a busy line, a message banner."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QMimeData, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

ERROR_STYLE = "color: #d32f2f;"
WARNING_STYLE = "color: #b26a00;"


def local_paths(mime: QMimeData) -> list[str]:
    """Local file and folder paths carried by a drag (URLs that are not local files are ignored)."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


class PathPicker(QFrame):
    """A titled path field with Browse buttons; accepts a dropped file or folder.

    ``path_changed(str)`` fires when the user picks, types (on Enter / focus out) or drops a path.
    """

    path_changed = Signal(str)

    def __init__(self, title: str, file_filter: str | None, allow_folder: bool, hint: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAcceptDrops(True)
        self.file_filter = file_filter
        self.start_folder: Callable[[], str] = lambda: str(Path.home())
        self.caption = title
        self.title = QLabel(f"<b>{title}</b>")
        self.line = QLineEdit()
        self.line.setPlaceholderText(hint)
        self.line.editingFinished.connect(self._typed)
        self.file_button = QPushButton("File…")
        self.file_button.setVisible(file_filter is not None)
        self.file_button.clicked.connect(self.browse_file)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setVisible(allow_folder)
        self.folder_button.clicked.connect(self.browse_folder)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.hide()
        row = QHBoxLayout()
        row.addWidget(self.line, 1)
        row.addWidget(self.file_button)
        row.addWidget(self.folder_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(row)
        layout.addWidget(self.message)
        self._path = ""

    def path(self) -> str:
        """The current path ('' when none)."""
        return self._path

    def set_path(self, path: str | Path, emit: bool = True) -> None:
        """Show ``path`` and (``emit``) announce it when it changed."""
        text = str(path) if path else ""
        self.line.setText(text)
        changed = text != self._path
        self._path = text
        if changed and emit:
            self.path_changed.emit(text)

    def _typed(self) -> None:
        self.set_path(self.line.text().strip())

    def browse_file(self) -> None:
        """Pick a file with the system dialog."""
        path, _ = QFileDialog.getOpenFileName(self, self.caption, self.start_folder(), self.file_filter or "")
        if path:
            self.set_path(path)

    def browse_folder(self) -> None:
        """Pick a folder with the system dialog."""
        path = QFileDialog.getExistingDirectory(self, self.caption, self.start_folder())
        if path:
            self.set_path(path)

    def show_message(self, text: str, error: bool = True) -> None:
        """A line under the field ('' hides it)."""
        self.message.setText(text)
        self.message.setStyleSheet(ERROR_STYLE if error else WARNING_STYLE)
        self.message.setVisible(bool(text))

    def set_highlight(self, on: bool) -> None:
        """Mark the field as a place to drop (while a usable file is dragged over the window)."""
        self.setProperty("dropTarget", on)
        self.setStyleSheet("PathPicker { border: 2px dashed palette(highlight); border-radius: 4px; }" if on else "")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Accept drags that carry a local file or folder that could be used; say why not otherwise."""
        from senior_intern.gui.drops import refusals

        paths = local_paths(event.mimeData())
        reasons = refusals(paths[:1])
        if paths and not reasons:
            event.acceptProposedAction()
            self.set_highlight(True)
        else:
            event.ignore()
            self.show_message(reasons[0] if reasons else "")

    def dragLeaveEvent(self, event) -> None:
        """Drop the highlight."""
        self.set_highlight(False)

    def dropEvent(self, event: QDropEvent) -> None:
        """Take the first dropped path."""
        self.set_highlight(False)
        paths = local_paths(event.mimeData())
        if paths:
            self.set_path(paths[0])
            event.acceptProposedAction()


class BusyLine(QWidget):
    """A progress bar with a short text, shown while background work runs.

    The bar is indeterminate until ``set_progress`` gives it a known total.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setMaximumWidth(120)
        self.bar.setMaximumHeight(12)
        self.bar.setTextVisible(False)
        self.label = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.label, 1)
        self.hide()

    def start(self, text: str) -> None:
        """Show the bar with ``text``."""
        self.label.setText(text)
        self.bar.show()
        self.show()

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (a total of 0 or less: indeterminate)."""
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(max(0, min(done, total)))
        else:
            self.bar.setRange(0, 0)

    def set_idle(self, text: str) -> None:
        """Show ``text`` alone, without the bar (nothing running)."""
        self.label.setText(text)
        self.bar.hide()
        self.bar.setRange(0, 0)
        self.show()

    def stop(self) -> None:
        """Hide it."""
        self.hide()


class Banner(QFrame):
    """A one-line notice with action buttons and a Dismiss button (non-modal)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self._layout = QHBoxLayout(self)
        self._layout.addWidget(self.label, 1)
        self._buttons: list[QPushButton] = []
        self.hide()

    def show_message(self, text: str, actions: list[tuple[str, Callable[[], None]]] = ()) -> None:
        """Show ``text`` with a button per (label, callback), plus Dismiss."""
        for button in self._buttons:
            button.deleteLater()
        self._buttons = []
        self.label.setText(text)
        for label, callback in [*actions, ("Dismiss", self.hide)]:
            button = QPushButton(label)
            button.clicked.connect(callback)
            if label != "Dismiss":
                button.clicked.connect(self.hide)
            self._layout.addWidget(button)
            self._buttons.append(button)
        self.show()

    def button(self, label: str) -> QPushButton:
        """The action button with this label (KeyError when absent)."""
        for button in self._buttons:
            if button.text() == label:
                return button
        raise KeyError(label)

