"""``DatasetPanel``: what the dataset looks like to the model — counts, lengths, trained share, preview.

The preview shows a few samples as the loss sees them: trained tokens highlighted, masked prompt
tokens dimmed.
"""

from __future__ import annotations

import html
from typing import Callable

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget

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


def dimmed_text_color(palette: QPalette) -> str:
    """An opaque colour halfway between text and background, as ``#rrggbb``.

    The palette's placeholder colour is the text colour with alpha, and ``QColor.name()`` drops
    the alpha: black text gave "#000000", so masked tokens were not dimmed at all.
    """
    text, base = palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base)
    mixed = QColor((text.red() + base.red()) // 2, (text.green() + base.green()) // 2, (text.blue() + base.blue()) // 2)
    return mixed.name()


class DatasetPanel(QWidget):
    """Summary numbers, a token-length histogram and a token preview of the analysed dataset."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.busy = BusyLine()
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.hide()
        self.fixes_row = QHBoxLayout()
        self._fix_buttons: list[QPushButton] = []
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
        self.preview.setPlaceholderText("A preview of the first samples appears here once the dataset is read.")
        self.preview.setMinimumHeight(240)
        legend = QLabel("Preview: <span style='background-color: rgba(89,161,79,0.28)'>trained tokens</span>, "
                        "<span style='color: gray'>masked prompt tokens</span>")
        self.enlarge_button = QPushButton("Enlarge…")
        self.enlarge_button.setToolTip("Show the preview in a large window")
        self.enlarge_button.clicked.connect(self.enlarge_preview)
        legend_row = QHBoxLayout()
        legend_row.addWidget(legend, 1)
        legend_row.addWidget(self.enlarge_button)
        self.enlarged: QDialog | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.busy)
        layout.addWidget(self.error)
        layout.addWidget(self.note)
        layout.addLayout(self.fixes_row)
        layout.addLayout(form)
        layout.addWidget(self.histogram)
        layout.addLayout(legend_row)
        layout.addWidget(self.preview, 1)
        self.palette_follower = PaletteFollower(self, [self.histogram])
        self.analysis: DatasetAnalysis | None = None

    def set_busy(self, text: str) -> None:
        """Show that an analysis is running (the old results go: they are for other settings)."""
        self.clear()
        self.busy.start(text)

    def set_error(self, text: str, fixes: list[tuple[str, Callable[[], None]]] = ()) -> None:
        """Show why the dataset could not be read, with a button per (label, fix); no stale results."""
        self.clear()
        self.error.setText(text)
        self.error.show()
        for label, callback in fixes:
            button = QPushButton(label)
            button.clicked.connect(callback)
            self.fixes_row.addWidget(button)
            self._fix_buttons.append(button)

    def set_note(self, text: str) -> None:
        """Show a neutral note instead of results (e.g. the dataset waits for a readable model)."""
        self.clear()
        self.note.setText(text)
        self.note.show()

    @property
    def fix_buttons(self) -> list[QPushButton]:
        """The buttons of the fixes on show."""
        return list(self._fix_buttons)

    def enlarge_preview(self) -> QDialog:
        """Show the preview in a large, resizable window (kept until closed)."""
        dialog = QDialog(self)
        dialog.setWindowTitle("Dataset preview")
        browser = QTextBrowser(dialog)
        browser.setHtml(self.preview.toHtml())
        QVBoxLayout(dialog).addWidget(browser)
        dialog.resize(900, 700)
        dialog.show()
        self.enlarged = dialog
        return dialog

    def clear(self) -> None:
        """Forget the shown analysis and any error with its fixes."""
        self.analysis = None
        self.busy.stop()
        self.error.hide()
        self.note.hide()
        for button in self._fix_buttons:
            self.fixes_row.removeWidget(button)
            button.deleteLater()
        self._fix_buttons = []
        for label in self.values.values():
            label.setText("–")
        self.bars.setOpts(x=[], height=[], width=1.0)
        self.preview.clear()

    def set_analysis(self, a: DatasetAnalysis) -> None:
        """Show an analysis result."""
        self.clear()
        self.analysis = a
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
        self.preview.setHtml(preview_html(a.previews, dimmed_text_color(self.palette())))
