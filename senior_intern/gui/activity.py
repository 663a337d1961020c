"""The status-bar activity indicator: which background tasks are running, by name."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from senior_intern.gui.tasks import TaskRunner


class ActivityIndicator(QWidget):
    """A busy bar and "Working: dataset analysis, model details" while ``tasks`` run; "Idle" otherwise."""

    def __init__(self, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("activityIndicator")
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setMaximumWidth(80)
        self.bar.setMaximumHeight(12)
        self.bar.setTextVisible(False)
        self.label = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.label)
        tasks.tasks_changed.connect(self.show_tasks)
        self.show_tasks(tasks.names())

    def show_tasks(self, names: list[str]) -> None:
        """Show the running tasks (each name once, with a count when repeated)."""
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        parts = [name if n == 1 else f"{name} ×{n}" for name, n in counts.items()]
        self.bar.setVisible(bool(parts))
        self.label.setText("Working: " + ", ".join(parts) if parts else "Idle")
        self.setToolTip("\n".join(parts) if parts else "No background work")
