"""``DatasetPanel``: what the dataset looks like to the model — counts, lengths, trained share, preview.

The preview shows a few samples as the loss sees them: trained tokens highlighted, masked prompt
tokens dimmed.
"""

from __future__ import annotations

import html

import pyqtgraph as pg
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFormLayout, QLabel, QTextBrowser, QVBoxLayout, QWidget

from senior_intern.gui.analysis import DatasetAnalysis
from senior_intern.gui.plot_style import PaletteFollower
from senior_intern.gui.widgets import ERROR_STYLE, BusyLine

TRAINED_BACKGROUND = "rgba(89, 161, 79, 0.28)"


def preview_html(previews: list[tuple[str, list[tuple[str, bool]]]], dim_color: str) -> str:
    """HTML of the samples: trained pieces on a green background, masked pieces in ``dim_color``."""
    parts = []
    for source, pieces in previews:
        spans = []
        for text, trained in pieces:
            escaped = html.escape(text)
            if trained:
                spans.append(f'<span style="background-color: {TRAINED_BACKGROUND};">{escaped}</span>')
            else:
                spans.append(f'<span style="color: {dim_color};">{escaped}</span>')
        parts.append(f"<p><b>{html.escape(source)}</b></p><pre style='white-space: pre-wrap;'>{''.join(spans)}</pre>")
    return "<hr/>".join(parts)


class DatasetPanel(QWidget):
    """Summary numbers, a token-length histogram and a token preview of the analysed dataset."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.busy = BusyLine()
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.values: dict[str, QLabel] = {}
        form = QFormLayout()
        for key in ("Format", "Samples", "Train / validation", "Trained tokens", "Truncated", "Length (tokens)", "Steps"):
            label = QLabel("–")
            label.setWordWrap(True)
            self.values[key] = label
            form.addRow(key, label)
        self.histogram = pg.PlotWidget()
        self.histogram.setTitle("Token length of the samples")
        self.histogram.setLabel("bottom", "tokens")
        self.histogram.setLabel("left", "samples")
        self.histogram.setMouseEnabled(x=False, y=False)
        self.histogram.setMinimumHeight(140)
        self.histogram.setMaximumHeight(200)
        self.bars = pg.BarGraphItem(x=[], height=[], width=1.0, brush="#4c8bf5")
        self.histogram.addItem(self.bars)
        self.preview = QTextBrowser()
        self.preview.setMinimumHeight(160)
        self.preview.setPlaceholderText("A preview of the first samples appears here once the dataset is read.")
        legend = QLabel("Preview: <span style='background-color: rgba(89,161,79,0.28)'>trained tokens</span>, "
                        "<span style='color: gray'>masked prompt tokens</span>")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.busy)
        layout.addWidget(self.error)
        layout.addLayout(form)
        layout.addWidget(self.histogram)
        layout.addWidget(legend)
        layout.addWidget(self.preview, 1)
        self.palette_follower = PaletteFollower(self, [self.histogram])
        self.analysis: DatasetAnalysis | None = None

    def set_busy(self, text: str) -> None:
        """Show that an analysis is running."""
        self.error.hide()
        self.busy.start(text)

    def set_error(self, text: str) -> None:
        """Show why the dataset could not be read."""
        self.busy.stop()
        self.error.setText(text)
        self.error.show()

    def clear(self) -> None:
        """Forget the shown analysis."""
        self.analysis = None
        self.busy.stop()
        self.error.hide()
        for label in self.values.values():
            label.setText("–")
        self.bars.setOpts(x=[], height=[], width=1.0)
        self.preview.clear()

    def set_analysis(self, a: DatasetAnalysis) -> None:
        """Show an analysis result."""
        self.analysis = a
        self.busy.stop()
        self.error.hide()
        s = a.stats
        self.values["Format"].setText(s.format)
        skipped = f", {s.skipped} skipped" if s.skipped else ""
        self.values["Samples"].setText(f"{s.n_samples:,} from {s.records:,} records/files{skipped}")
        self.values["Train / validation"].setText(f"{a.train_samples:,} / {a.validation_samples:,}")
        self.values["Trained tokens"].setText(f"{s.trained_fraction:.0%} of {s.total_tokens:,} tokens")
        self.values["Truncated"].setText(f"{s.truncated:,} samples" + (" (raise the max sequence length?)" if s.truncated else ""))
        self.values["Length (tokens)"].setText(f"mean {s.mean_length:,.0f}, min {s.min_length:,}, max {s.max_length:,}")
        self.values["Steps"].setText(f"{a.steps_per_epoch:,} per epoch, {a.total_steps:,} in all")
        if s.histogram:
            centres = [(b.low + b.high) / 2 for b in s.histogram]
            width = (s.histogram[0].high - s.histogram[0].low) * 0.9
            self.bars.setOpts(x=centres, height=[b.count for b in s.histogram], width=width)
        dim = self.palette().color(QPalette.ColorRole.PlaceholderText).name()
        self.preview.setHtml(preview_html(a.previews, dim))
