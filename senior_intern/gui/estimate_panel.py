"""``EstimatePanel``: the pre-flight view of a run — steps, parameters, memory, time, LR schedule.

Step counts come from the dataset analysis (the engine's own counting). The learning-rate curve
is the closed form the engine's scheduler follows (``training.optim.lr_at``). Parameters,
peak memory, duration and disk come from the engine's pre-flight estimate (``training.estimate``).
Both run on background threads; results for settings that changed meanwhile are dropped.
"""

from __future__ import annotations

import copy
import dataclasses
import html

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

from senior_intern.config import TrainingJob
from senior_intern.gui import analysis
from senior_intern.gui.analysis import DatasetAnalysis
from senior_intern.gui.errors import describe_error
from senior_intern.gui.plot_style import PaletteFollower
from senior_intern.gui.run_page import format_duration
from senior_intern.gui.tasks import TaskRunner
from senior_intern.gui.widgets import ERROR_STYLE, WARNING_STYLE
from senior_intern.hardware.metrics import format_bytes

COUNT_ROWS = ("Optimizer steps", "Global batch", "Warm-up", "Tokens per epoch")
ESTIMATE_ROWS = ("Trainable parameters", "Peak memory", "Duration", "Disk")
WAITING = "– (waiting for the dataset)"


def _estimate_key(job: TrainingJob, analysis_result: DatasetAnalysis) -> str:
    """What the estimate depends on: everything but names, ids and descriptions."""
    data = job.to_dict()
    for key in ("name", "description", "id", "created_at", "tags", "output_dir", "adapters_dir"):
        data.pop(key, None)
    return repr((data, analysis_result.total_steps))


class EstimatePanel(QWidget):
    """Counts, estimate and schedule of the configured run; ``update_for(job, analysis)`` on every edit.

    ``estimate_changed(estimate or None)``: a new estimate, or None while there is none (waiting,
    estimating, failed).
    """

    estimate_changed = Signal(object)

    def __init__(self, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.values: dict[str, QLabel] = {}
        form = QFormLayout()
        for key in COUNT_ROWS + ESTIMATE_ROWS:
            label = QLabel("–")
            label.setWordWrap(True)
            self.values[key] = label
            form.addRow(key, label)
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.hide()
        self.plot = pg.PlotWidget()
        self.plot.setTitle("Learning-rate schedule")
        self.plot.setLabel("bottom", "step")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMinimumHeight(110)
        self.plot.setMaximumHeight(170)
        self.curve = self.plot.plot(pen=pg.mkPen("#59a14f", width=2))
        self.palette_follower = PaletteFollower(self, [self.plot])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.notes)
        layout.addWidget(self.plot)
        self._schedule_for: tuple | None = None
        self._estimate_for: str | None = None

    def value(self, key: str) -> str:
        """Text of one row (for tests and accessibility)."""
        return self.values[key].text()

    # --- updating ---------------------------------------------------------------------------------
    def update_for(self, job: TrainingJob, result: DatasetAnalysis | None) -> None:
        """Show ``job`` on the analysed dataset; start the schedule and estimate when their inputs changed."""
        self.set_counts(job, result)
        if result is None:
            self._schedule_for = self._estimate_for = None
            self.tasks.forget("lr schedule")  # results still on their way are dropped
            self.tasks.forget("estimate")
            self.curve.setData([], [])
            for key in ESTIMATE_ROWS:
                self.values[key].setText(WAITING)
            self.estimate_changed.emit(None)
            self.notes.hide()
            return
        schedule_key = (result.total_steps, repr(dataclasses.asdict(job.training)))
        if schedule_key != self._schedule_for:
            self._schedule_for = schedule_key
            self.tasks.submit(analysis.schedule_preview, copy.deepcopy(job.training), result.total_steps,
                              on_done=lambda curve: self.curve.setData(*curve),
                              on_error=lambda exc: self.curve.setData([], []), latest="lr schedule", name="Schedule preview")
        estimate_key = _estimate_key(job, result)
        if estimate_key != self._estimate_for:
            self._estimate_for = estimate_key
            for key in ESTIMATE_ROWS:
                self.values[key].setText("estimating…")
            self.estimate_changed.emit(None)
            self.tasks.submit(analysis.estimate_job, copy.deepcopy(job), on_done=self.set_estimate,
                              on_error=self.set_estimate_error, latest="estimate", name="Estimate")

    def set_counts(self, job: TrainingJob, result: DatasetAnalysis | None) -> None:
        """Show the step counts for ``job`` on the analysed dataset (dashes until it is analysed)."""
        t = job.training
        procs = max(1, t.processes)
        self.values["Global batch"].setText(f"{t.batch_size * procs * t.gradient_accumulation_steps} sequences "
                                            f"({t.batch_size} per process x {procs} process{'es' if procs > 1 else ''} "
                                            f"x {t.gradient_accumulation_steps} accumulation)")
        if result is None:
            for key in ("Optimizer steps", "Warm-up", "Tokens per epoch"):
                self.values[key].setText(WAITING)
            return
        capped = " (capped by max steps)" if t.max_steps is not None and result.total_steps == t.max_steps else ""
        self.values["Optimizer steps"].setText(f"{result.total_steps:,}{capped}: {result.steps_per_epoch:,} per epoch x {t.epochs}")
        share = min(t.warmup_steps, result.total_steps) / result.total_steps if result.total_steps else 0
        self.values["Warm-up"].setText(f"{t.warmup_steps:,} steps ({share:.0%} of the run)")
        s = result.stats
        train_share = result.train_samples / s.n_samples if s.n_samples else 0
        self.values["Tokens per epoch"].setText(f"{int(s.total_tokens * train_share):,} "
                                                f"({int(s.trained_tokens * train_share):,} trained)")

    def set_estimate(self, est) -> None:
        """Show a ``training.estimate.TrainingEstimate``."""
        share = est.trainable_parameters / est.total_parameters if est.total_parameters else 0
        self.values["Trainable parameters"].setText(f"{est.trainable_parameters:,} of {est.total_parameters:,} ({share:.2%})")
        free = f" of {format_bytes(est.available_memory)} free" if est.available_memory else ""
        verdict = "fits" if est.fits else f"does not fit: lower the batch size to {est.recommended_batch_size}" if est.recommended_batch_size else "does not fit"
        self.values["Peak memory"].setText(f"{format_bytes(est.peak_memory)}{free} on {est.device} ({est.dtype}): {verdict}")
        self.values["Peak memory"].setStyleSheet("" if est.fits else ERROR_STYLE)
        self.values["Duration"].setText(f"about {format_duration(est.duration_seconds)} ({est.seconds_per_step:.2f} s per step)")
        self.values["Disk"].setText(format_bytes(est.disk_bytes) + " (checkpoints and adapter)")
        self.notes.setText("<br/>".join(f"⚠ {html.escape(w, quote=False)}" for w in est.warnings))
        self.notes.setStyleSheet(WARNING_STYLE)
        self.notes.setVisible(bool(est.warnings))
        self.estimate_changed.emit(est)

    def set_estimate_error(self, exc: BaseException) -> None:
        """Show why the estimate could not be made."""
        for key in ESTIMATE_ROWS:
            self.values[key].setText("–")
        self.notes.setText(f"No estimate: {html.escape(describe_error(exc), quote=False)}")
        self.notes.setStyleSheet(ERROR_STYLE)
        self.notes.show()
        self.estimate_changed.emit(None)
