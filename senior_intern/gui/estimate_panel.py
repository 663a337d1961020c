"""``EstimatePanel``: the pre-flight view of a run — steps, effective batch, learning-rate schedule.

The numbers come from the dataset analysis (the engine's own counting); the schedule curve is the
closed form the engine's scheduler follows (``training.optim.lr_at``), computed in the background.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

from senior_intern.config import TrainingJob
from senior_intern.gui.analysis import DatasetAnalysis
from senior_intern.gui.plot_style import PaletteFollower


class EstimatePanel(QWidget):
    """Steps and schedule of the configured run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: dict[str, QLabel] = {}
        form = QFormLayout()
        for key in ("Optimizer steps", "Effective batch", "Warm-up", "Tokens per epoch"):
            label = QLabel("–")
            self.values[key] = label
            form.addRow(key, label)
        self.plot = pg.PlotWidget()
        self.plot.setTitle("Learning-rate schedule")
        self.plot.setLabel("bottom", "step")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMinimumHeight(120)
        self.plot.setMaximumHeight(180)
        self.curve = self.plot.plot(pen=pg.mkPen("#59a14f", width=2))
        self.palette_follower = PaletteFollower(self, [self.plot])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.plot)

    def set_counts(self, job: TrainingJob, analysis: DatasetAnalysis | None) -> None:
        """Show the step counts for ``job`` on the analysed dataset (dashes until it is analysed)."""
        t = job.training
        self.values["Effective batch"].setText(f"{t.batch_size * t.gradient_accumulation_steps} sequences "
                                               f"({t.batch_size} x {t.gradient_accumulation_steps})")
        if analysis is None:
            for key in ("Optimizer steps", "Warm-up", "Tokens per epoch"):
                self.values[key].setText("– (waiting for the dataset)")
            self.curve.setData([], [])
            return
        capped = " (capped by max steps)" if t.max_steps is not None and analysis.total_steps == t.max_steps else ""
        self.values["Optimizer steps"].setText(f"{analysis.total_steps:,}{capped}: {analysis.steps_per_epoch:,} per epoch x {t.epochs}")
        share = min(t.warmup_steps, analysis.total_steps) / analysis.total_steps if analysis.total_steps else 0
        self.values["Warm-up"].setText(f"{t.warmup_steps:,} steps ({share:.0%} of the run)")
        s = analysis.stats
        train_share = analysis.train_samples / s.n_samples if s.n_samples else 0
        self.values["Tokens per epoch"].setText(f"{int(s.total_tokens * train_share):,} "
                                                f"({int(s.trained_tokens * train_share):,} trained)")

    def set_schedule(self, steps: list[int], rates: list[float]) -> None:
        """Draw the learning rate per step."""
        self.curve.setData(steps, rates)

    def value(self, key: str) -> str:
        """Text of one row (for tests and accessibility)."""
        return self.values[key].text()
