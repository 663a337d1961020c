"""The Run page: a run in progress — progress, live charts, controls, log — and its outcome.

Signal handlers only store what arrived (and append to chart buffers); a timer refreshes the
labels and the charts a few times a second, so a fast run cannot flood the event loop.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from senior_intern import paths
from senior_intern.config import TrainingJob
from senior_intern.gui.charts import ChartPanel
from senior_intern.gui.errors import describe_error
from senior_intern.gui.runs import run_history
from senior_intern.gui.widgets import ERROR_STYLE
from senior_intern.gui.worker import TrainingRunner
from senior_intern.training.events import Evaluated, LogLevel, LogMessage, Progress, StateChanged, TrainingState, TrainingStatus

LOG_LINES = 5000
LABEL_REFRESH_MS = 250


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; '–' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "–" if value is None else format(value, fmt)


class RunPage(QWidget):
    """Shows and controls the run of a ``TrainingRunner``."""

    open_adapter = Signal(str)  # adapter id: show it in the library
    try_adapter = Signal(str)  # adapter id: open it in the playground
    status_changed = Signal(str)  # short text for the status bar

    def __init__(self, runner: TrainingRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.state = TrainingState.IDLE
        self.last_progress: Progress | None = None
        self.last_validation: Evaluated | None = None
        self.result = None
        self.progress_events = 0
        self._started_at = 0.0
        self._progress_at = 0.0  # when the last step ended (monotonic)

        self.title = QLabel("No run yet. Start one on the Train page, or resume an interrupted run.")
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.title.setFont(font)
        self.state_label = QLabel(TrainingState.IDLE.value)
        self.world_label = QLabel()  # a data-parallel run's processes and each rank's device
        self.world_label.setObjectName("worldLabel")
        self.world_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.world_label.hide()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFormat("%p%")
        self.stats: dict[str, QLabel] = {}
        grid = QGridLayout()
        for i, key in enumerate(("Epoch", "Step", "Elapsed", "ETA", "Tokens/s", "Loss", "Validation loss", "Learning rate")):
            value = QLabel("–")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.stats[key] = value
            grid.addWidget(QLabel(key), (i // 4) * 2, i % 4)
            grid.addWidget(value, (i // 4) * 2 + 1, i % 4)
        self.pause_button = QPushButton("Pause")
        self.cancel_button = QPushButton("Cancel")
        self.pause_button.setObjectName("pauseButton")
        self.cancel_button.setObjectName("cancelButton")
        self.resume_button = QPushButton("Resume from checkpoint…")
        for button in (self.pause_button, self.cancel_button):
            button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.state_label, 1)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.resume_button)

        self.summary = QFrame()
        self.summary.setFrameShape(QFrame.Shape.StyledPanel)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.library_button = QPushButton("Show in adapter library")
        self.playground_button = QPushButton("Try in playground")
        self.folder_button = QPushButton("Open run folder")
        self.continue_button = QPushButton("Resume this run")
        summary_buttons = QHBoxLayout()
        for button in (self.library_button, self.playground_button, self.folder_button, self.continue_button):
            summary_buttons.addWidget(button)
        summary_buttons.addStretch(1)
        summary_layout = QVBoxLayout(self.summary)
        summary_layout.addWidget(self.summary_label)
        summary_layout.addLayout(summary_buttons)
        self.summary.hide()

        self.charts = ChartPanel()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setPlaceholderText("The run's log appears here.")
        # The summary sits with the log, so showing it never resizes (and repaints) the charts.
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.summary)
        bottom_layout.addWidget(self.log_view, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.charts)
        splitter.addWidget(bottom)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.world_label)
        layout.addWidget(self.progress_bar)
        layout.addLayout(grid)
        layout.addLayout(buttons)
        layout.addWidget(splitter, 1)

        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(self.resume_dialog)
        self.library_button.clicked.connect(lambda: self.result and self.open_adapter.emit(self.result.adapter_id))
        self.playground_button.clicked.connect(lambda: self.result and self.try_adapter.emit(self.result.adapter_id))
        self.folder_button.clicked.connect(self._open_run_folder)
        self.continue_button.clicked.connect(lambda: self.result and self.resume_from(self.result.resume_checkpoint))
        runner.state_changed.connect(self._on_state)
        runner.progress.connect(self._on_progress)
        runner.evaluated.connect(self._on_evaluated)
        runner.log.connect(self._on_log)
        runner.opening.connect(lambda event: self.state_label.setText(event.text))  # a named task with its progress
        runner.world.connect(lambda event: (self.world_label.setText(f"Data parallel: {event.text}"), self.world_label.show()))
        runner.finished.connect(self._on_finished)
        runner.failed.connect(self._on_failed)
        runner.running_changed.connect(self.resume_button.setDisabled)
        self.label_timer = QTimer(self)
        self.label_timer.setInterval(LABEL_REFRESH_MS)
        self.label_timer.timeout.connect(self._refresh_labels)

    # --- starting ---------------------------------------------------------------------------------
    def start_job(self, job: TrainingJob) -> None:
        """Run ``job`` and show it."""
        self._reset(f"Training “{job.name}”")
        self._append_log(f"Starting job {job.name}: {job.base_model_path} on {job.dataset_path}")
        self.runner.start(job)

    def resume_from(self, path: str | Path | None) -> None:
        """Continue the run of a checkpoint or run folder and show it."""
        if not path:
            return
        self._reset(f"Resuming {Path(path).name}")
        self._append_log(f"Resuming from {path}")
        self._show_history(path)
        self.runner.resume(path)

    def _show_history(self, path: str | Path) -> None:
        """Put the resumed run's recorded steps (its metrics.jsonl) into the charts and the labels."""
        try:
            history = run_history(path)
        except OSError:
            history = None
        if history is None:
            return
        self.charts.set_history(history.steps, history.losses, history.validation_steps, history.validation_losses,
                                history.learning_rates, history.grad_norms)
        if history.steps:
            self.stats["Step"].setText(f"{history.last_step:,} (from the checkpoint)")
            self.stats["Loss"].setText(_num(history.losses[-1]))
        if history.validation_losses:
            self.stats["Validation loss"].setText(_num(history.validation_losses[-1]))
        self._append_log(f"Charts restored from the run's history: {len(history.steps)} steps")

    def resume_dialog(self) -> None:
        """Pick a run folder (or one of its checkpoints) and resume it."""
        start = str(paths.runs_dir()) if paths.runs_dir().is_dir() else str(Path.home())
        path = QFileDialog.getExistingDirectory(self, "Resume a run: choose its run folder or a checkpoint", start)
        if path:
            self.resume_from(path)

    def _reset(self, title: str) -> None:
        self.title.setText(title)
        self.state = TrainingState.PREPARING
        self.state_label.setText("Starting…")
        self.last_progress = self.last_validation = self.result = None
        self.progress_events = 0
        self._started_at = self._progress_at = time.monotonic()
        self.progress_bar.setValue(0)
        self.world_label.hide()
        for value in self.stats.values():
            value.setText("–")
        self.summary.hide()
        self.log_view.clear()
        self.charts.start()
        self.charts.clear()  # drawn by the timer, one chart per tick
        self.charts.start_hardware(self._started_at)  # CPU/RAM/GPU move every second, not only per step
        self.label_timer.start()
        self.pause_button.setText("Pause")
        self.cancel_button.setText("Cancel")
        self.pause_button.setEnabled(True)
        self.cancel_button.setEnabled(True)
        self.status_changed.emit("Starting…")

    # --- controls ---------------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        """Pause a running run, or resume a paused one."""
        if not self.runner.running:
            return
        if self.runner.paused:
            self.runner.resume_run()
            self.pause_button.setText("Pause")
        else:
            self.runner.pause()
            # Heard, not yet done: the engine pauses at the next micro-batch and then says so.
            self.pause_button.setText("Pause pending…")
            self.pause_button.setEnabled(False)
            self.state_label.setText("Pausing at the next batch…")

    def cancel(self) -> None:
        """Stop the run; it saves a checkpoint to resume from later."""
        if self.runner.running:
            self.runner.cancel()
            self.state_label.setText("Cancel pending: stopping at the next batch, then saving a checkpoint…")
            self.cancel_button.setText("Cancel pending…")
            self.pause_button.setEnabled(False)
            self.cancel_button.setEnabled(False)

    # --- events -----------------------------------------------------------------------------------
    def _on_state(self, event: StateChanged) -> None:
        self.state = event.new
        self.state_label.setText(event.message or event.new.value)  # the engine's messages name the state
        cancelling = self.cancel_button.text() != "Cancel"
        if event.new == TrainingState.PAUSED:
            self.pause_button.setText("Resume")
            self.pause_button.setEnabled(not cancelling)
        elif event.new == TrainingState.TRAINING:
            self.pause_button.setText("Pause")
            self.pause_button.setEnabled(not cancelling)
        self.status_changed.emit(event.new.value)

    def _on_progress(self, p: Progress) -> None:
        self.last_progress = p
        self._progress_at = time.monotonic()
        self.progress_events += 1
        self.charts.add_progress(p)

    def _on_evaluated(self, e: Evaluated) -> None:
        self.last_validation = e
        self.charts.add_evaluation(e)
        best = " (best so far)" if e.is_best else ""
        self._append_log(f"Validation at step {e.global_step}: loss {e.validation_loss:.4f}, accuracy {e.validation_accuracy:.1%}{best}")

    def _on_log(self, message: LogMessage) -> None:
        prefix = "" if message.level == LogLevel.INFO else f"{message.level.value.upper()}: "
        self._append_log(prefix + message.text, message.timestamp)

    def _append_log(self, text: str, timestamp: float | None = None) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(timestamp or time.time()))
        self.log_view.appendPlainText(f"[{stamp}] {text}")

    def _refresh_labels(self) -> None:
        """Called by the label timer: Elapsed, the running step and the ETA move every tick, not
        only when a step ends (the ETA counts down from the engine's figure at the last step)."""
        now = time.monotonic()
        live = self.label_timer.isActive()
        if live:
            self.stats["Elapsed"].setText(format_duration(now - self._started_at))
        p = self.last_progress
        if p is None:
            return
        since = max(0.0, now - self._progress_at) if live else 0.0
        self.progress_bar.setValue(int(p.percent * 10))
        self.stats["Epoch"].setText(f"{p.epoch} / {p.total_epochs}")
        step = f"{p.global_step:,} / {p.total_steps:,}"
        if live and self.state == TrainingState.TRAINING and p.global_step < p.total_steps:
            step += f" · step {p.global_step + 1:,} running · {since:.0f} s"
        self.stats["Step"].setText(step)
        if not live:
            self.stats["Elapsed"].setText(format_duration(p.elapsed))
        self.stats["ETA"].setText(format_duration(max(0.0, p.eta - since)) if live and p.eta is not None else "–")
        self.stats["Tokens/s"].setText(f"{p.tokens_per_second:,.0f}")
        self.stats["Loss"].setText(_num(p.metrics.loss))
        self.stats["Learning rate"].setText(_num(p.metrics.learning_rate, ".3g"))
        if self.last_validation is not None:
            self.stats["Validation loss"].setText(_num(self.last_validation.validation_loss))
        self.status_changed.emit(f"{self.state.value} {p.percent:.0f}%")

    # --- the end ----------------------------------------------------------------------------------
    def _finish_ui(self) -> None:
        self.charts.stop_hardware()
        self.charts.stop()
        self.label_timer.stop()
        self._refresh_labels()
        self.pause_button.setEnabled(False)
        self.cancel_button.setEnabled(False)
        self.pause_button.setText("Pause")
        self.cancel_button.setText("Cancel")

    def _on_finished(self, result) -> None:
        self.result = result
        self._finish_ui()
        # One duration for the run: the summary's and the Elapsed label's are the same number.
        self.stats["Elapsed"].setText(format_duration(result.duration))
        lines = [f"<b>{result.status.value}</b> after {format_duration(result.duration)}, {result.total_steps:,} optimizer steps."]
        if result.final_metrics is not None:
            lines.append(f"Final training loss {result.final_metrics.loss:.4f}.")
        if result.final_validation_loss is not None:
            lines.append(f"Final validation loss {result.final_validation_loss:.4f}.")
        if result.adapter_path:
            lines.append(f"Adapter saved to {html.escape(result.adapter_path)}.")
            self.progress_bar.setValue(1000)
        if result.status == TrainingStatus.FAILED and result.error_message:
            lines.append(f"<span style='{ERROR_STYLE}'>{html.escape(result.error_message)}</span>")
        if result.resume_checkpoint and not result.adapter_path:
            lines.append(f"You can resume from {html.escape(result.resume_checkpoint)}.")
        self._show_summary(" ".join(lines), result.adapter_id, result.resume_checkpoint, result.run_dir)
        self.status_changed.emit(result.status.value)

    def _on_failed(self, exc: BaseException) -> None:
        self.result = None
        self._finish_ui()
        self.state_label.setText(TrainingState.FAILED.value)
        message = describe_error(exc)
        self._append_log(f"ERROR: {message}")
        self._show_summary(f"<b>The run could not start.</b> <span style='{ERROR_STYLE}'>{html.escape(message)}</span>", None, None, None)
        self.status_changed.emit(TrainingState.FAILED.value)

    def _show_summary(self, text: str, adapter_id: str | None, resume: str | None, run_dir: str | None) -> None:
        self.summary_label.setText(text.replace("\n", "<br/>"))
        self.library_button.setVisible(bool(adapter_id))
        self.playground_button.setVisible(bool(adapter_id))
        self.continue_button.setVisible(bool(resume) and not adapter_id)
        self.folder_button.setVisible(bool(run_dir))
        self.summary.show()

    def _open_run_folder(self) -> None:
        if self.result is not None and self.result.run_dir:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.result.run_dir))
