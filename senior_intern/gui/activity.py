"""The activity centre: the status-bar indicator, the Activity panel and the end-of-task notice.

The indicator (a ``BusyLine`` from ``gui/widgets.py``) names the running tasks and shows the
progress and ETA of the oldest one that reports progress; its Activity button opens the panel
with every task's progress bar, elapsed time, ETA and a Cancel button where the task can be
cancelled. A task that asked for it (``notify``) ends with a notice: "finished in 0:42", with
Open folder and Copy path when it produced a file.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from senior_intern.gui.run_page import format_duration
from senior_intern.gui.tasks import CANCELLED, DONE, TaskInfo, TaskRunner
from senior_intern.gui.widgets import Banner, BusyLine

REFRESH_MS = 1000
FINISHED_SHOWN = 8


def describe_progress(info: TaskInfo) -> str:
    """"12 / 40 · 0:07 elapsed · about 0:21 left" (the parts that are known)."""
    parts = []
    if info.total > 0:
        parts.append(f"{info.done} / {info.total} ({100 * (info.fraction() or 0):.0f}%)")
    parts.append(f"{format_duration(info.elapsed())} elapsed")
    eta = info.eta()
    if eta is not None:
        parts.append(f"about {format_duration(eta)} left")
    if info.message:
        parts.append(info.message)
    return " · ".join(parts)


def describe_end(info: TaskInfo) -> str:
    """"GGUF export finished in 0:42: /path" / "Merge was cancelled after 0:10" / "… failed …"."""
    took = format_duration(info.elapsed())
    if info.outcome == DONE:
        said = f"{info.name} finished in {took}" + (f": {info.path}" if info.path else ".")
        return f"{said}\n{info.message}" if info.message else said
    if info.outcome == CANCELLED:
        return f"{info.name} was cancelled after {took}."
    return f"{info.name} failed after {took}: {info.message}" if info.message else f"{info.name} failed after {took}."


class TaskRow(QWidget):
    """One task in the Activity panel: name, progress bar, times, Cancel."""

    def __init__(self, tasks: TaskRunner, info: TaskInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task_id = info.id
        self.name = QLabel(f"<b>{info.name}</b>")
        self.bar = QProgressBar()
        self.bar.setMaximumHeight(14)
        self.detail = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelTaskButton")
        self.cancel_button.setVisible(info.cancellable)
        self.cancel_button.clicked.connect(lambda: tasks.cancel(self.task_id))
        top = QHBoxLayout()
        top.addWidget(self.name, 1)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(self.detail)
        self.show_info(info)

    def show_info(self, info: TaskInfo) -> None:
        """Refresh the bar and the times."""
        if info.total > 0:
            self.bar.setRange(0, info.total)
            self.bar.setValue(min(info.done, info.total))
        else:
            self.bar.setRange(0, 0)
        self.detail.setText(describe_progress(info))
        self.cancel_button.setEnabled(not info.cancel_requested.is_set())


class ActivityPanel(QDialog):
    """Every running task with its progress, ETA and Cancel; the last finished ones below."""

    def __init__(self, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("activityPanel")
        self.setWindowTitle("Activity")
        self.setModal(False)
        self.setMinimumWidth(460)
        self.tasks = tasks
        self.rows: dict[int, TaskRow] = {}
        self.empty = QLabel("Nothing is running.")
        self.rows_layout = QVBoxLayout()
        self.finished = QLabel()
        self.finished.setWordWrap(True)
        self.finished.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._ended: list[str] = []
        layout = QVBoxLayout(self)
        layout.addWidget(self.empty)
        layout.addLayout(self.rows_layout)
        layout.addWidget(QLabel("<b>Finished</b>"))
        layout.addWidget(self.finished)
        layout.addStretch(1)
        tasks.task_updated.connect(self._updated)
        tasks.task_ended.connect(self._ended_task)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def refresh(self) -> None:
        """Add, update and drop rows to match the running tasks (elapsed and ETA tick)."""
        running = {info.id: info for info in self.tasks.running()}
        for task_id in list(self.rows):
            if task_id not in running:
                self.rows.pop(task_id).deleteLater()
        for task_id, info in running.items():
            row = self.rows.get(task_id)
            if row is None:
                row = self.rows[task_id] = TaskRow(self.tasks, info)
                self.rows_layout.addWidget(row)
            else:
                row.show_info(info)
        self.empty.setVisible(not running)
        self.finished.setText("\n".join(self._ended) or "–")

    def _updated(self, info: TaskInfo) -> None:
        self.refresh()

    def _ended_task(self, info: TaskInfo) -> None:
        self._ended = [describe_end(info)] + self._ended[: FINISHED_SHOWN - 1]
        self.refresh()


IDLE_TEXT = "No background tasks"


class ActivityIndicator(QWidget):
    """A busy bar and "Working: dataset analysis, model details" while ``tasks`` run; ``IDLE_TEXT`` otherwise
    (not "Idle": that word is the run state, shown beside it).

    With one task reporting progress the bar shows it and the text adds the share and the ETA.
    The Activity button opens the panel (Cancel lives there).
    """

    def __init__(self, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("activityIndicator")
        self.tasks = tasks
        self.busy = BusyLine()
        self.busy.bar.setMaximumWidth(80)
        self.bar, self.label = self.busy.bar, self.busy.label
        self.label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)  # next to its button
        self.panel_button = QPushButton("Activity…")
        self.panel_button.setObjectName("activityButton")
        self.panel_button.setFlat(True)
        self.panel_button.clicked.connect(self.open_panel)
        self.panel: ActivityPanel | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.busy)
        layout.addWidget(self.panel_button)
        tasks.tasks_changed.connect(self.show_tasks)
        tasks.task_updated.connect(lambda info: self.show_tasks(tasks.names()))
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(lambda: self.show_tasks(tasks.names()))
        self.show_tasks(tasks.names())

    def show_tasks(self, names: list[str]) -> None:
        """Show the running tasks (each name once, with a count when repeated) and the first one's progress."""
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        parts = [name if n == 1 else f"{name} ×{n}" for name, n in counts.items()]
        if not parts:
            self.timer.stop()
            self.busy.set_idle(IDLE_TEXT)
            self.setToolTip("No background work")
            return
        measured = next((info for info in self.tasks.running() if info.total > 0), None)
        text = "Working: " + ", ".join(parts)
        if measured is not None:
            self.busy.set_progress(measured.done, measured.total)
            eta = measured.eta()
            text += f" ({100 * (measured.fraction() or 0):.0f}%" + (f", about {format_duration(eta)} left)" if eta is not None else ")")
        else:
            self.busy.set_progress(0, 0)
        self.busy.start(text)
        self.setToolTip("\n".join(f"{info.name}: {describe_progress(info)}" for info in self.tasks.running()))
        if not self.timer.isActive():
            self.timer.start()

    def open_panel(self) -> ActivityPanel:
        """Show the Activity panel (created once)."""
        if self.panel is None:
            self.panel = ActivityPanel(self.tasks, self.window())
        self.panel.refresh()
        self.panel.show()
        self.panel.raise_()
        return self.panel


class ActivityNotice(Banner):
    """The notice shown when a task that asked for one ends, with Open folder / Copy path for its file."""

    def __init__(self, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("activityNotice")
        tasks.task_ended.connect(self.task_ended)

    def task_ended(self, info: TaskInfo) -> None:
        """Announce the end of ``info`` when it asked for it."""
        if not info.notify:
            return
        actions = []
        if info.outcome == DONE and info.path:
            path = info.path
            actions = [("Open folder", lambda: open_folder(path)), ("Copy path", lambda: copy_path(path))]
        self.show_message(describe_end(info), actions)


def open_folder(path: str) -> None:
    """Open the folder that holds ``path`` (or ``path`` itself when it is a folder) in the file manager."""
    p = Path(path)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(p if p.is_dir() else p.parent)))


def copy_path(path: str) -> None:
    """Put ``path`` on the clipboard."""
    QGuiApplication.clipboard().setText(path)
