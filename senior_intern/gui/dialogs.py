"""Dialogs of the adapter library: export as GGUF, merge into the base model.

Each has a static ``ask(...)`` that returns the user's choice or None (tests replace ``ask``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QWidget)

GGUF_DTYPES = ("f16", "f32", "bf16", "q8_0")
MERGE_DTYPES = ("float16", "bfloat16", "float32")
DIALOG_MIN_WIDTH = 680  # wide enough that a library path and a model path show whole

# What each data or quantisation type means, shown under the choice and as its tooltip.
TYPE_HELP = {
    "same": "the base's own type for every merged tensor (Q8_0 where the gguf package cannot write it)",
    "f32": "32-bit float: exact, 4 bytes per weight",
    "float32": "32-bit float: exact, 4 bytes per weight, the largest folder",
    "f16": "16-bit float: 2 bytes per weight, what llama.cpp loads LoRA adapters as by default",
    "float16": "16-bit float: 2 bytes per weight, what most tools load",
    "bf16": "bfloat16: 2 bytes per weight, float32's range with less precision",
    "bfloat16": "bfloat16: 2 bytes per weight, float32's range with less precision",
    "q8_0": "8-bit blocks: about 1.06 bytes per weight, near-lossless",
    "q4_0": "4-bit blocks: about 0.56 bytes per weight, smallest, some quality loss",
}


def type_help_label(combo: QComboBox) -> QLabel:
    """A label under ``combo`` that says what its current type means (kept up to date)."""
    label = QLabel()
    label.setWordWrap(True)
    label.setObjectName("typeHelp")

    def update() -> None:
        text = TYPE_HELP.get(combo.currentText(), "")
        label.setText(text)
        combo.setToolTip(text)

    combo.currentTextChanged.connect(update)
    update()
    return label


@dataclass(frozen=True)
class ExportChoice:
    """What the GGUF export dialog returns."""

    base_model: str
    out_path: str
    dtype: str


@dataclass(frozen=True)
class MergeChoice:
    """What the merge dialog returns."""

    base_model: str
    out_dir: str
    dtype: str


def _path_row(line: QLineEdit, browse) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    layout.addWidget(line, 1)
    layout.addWidget(button)
    return row


class _PathsDialog(QDialog):
    """Base model + output path + dtype, with OK enabled only when both paths are filled."""

    def __init__(self, parent: QWidget | None, title: str, base: str, out: str, dtypes: tuple[str, ...], out_label: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.base = QLineEdit(base)
        self.out = QLineEdit(out)
        self.dtype = QComboBox()
        self.dtype.addItems(dtypes)
        form = QFormLayout(self)
        form.addRow("Base model", _path_row(self.base, self._browse_base))
        form.addRow(out_label, _path_row(self.out, self._browse_out))
        form.addRow("Data type", self.dtype)
        form.addRow("", type_help_label(self.dtype))
        self.setMinimumWidth(DIALOG_MIN_WIDTH)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        for line in (self.base, self.out):
            line.textChanged.connect(self._check)
        self._check()

    def _check(self) -> None:
        ok = bool(self.base.text().strip()) and bool(self.out.text().strip())
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)

    def _browse_base(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", self.base.text(), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.base.setText(path)

    def _browse_out(self) -> None:  # pragma: no cover - replaced by each dialog
        raise NotImplementedError


class ExportGgufDialog(_PathsDialog):
    """Export an adapter as a GGUF LoRA file for llama.cpp."""

    def __init__(self, parent: QWidget | None, base: str, out: str) -> None:
        super().__init__(parent, "Export adapter as GGUF", base, out, GGUF_DTYPES, "GGUF file")

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "GGUF file", self.out.text(), "GGUF files (*.gguf)")
        if path:
            self.out.setText(path)

    @staticmethod
    def ask(parent: QWidget | None, base: str, out: str) -> ExportChoice | None:
        """Show the dialog; the choice, or None when cancelled."""
        dialog = ExportGgufDialog(parent, base, out)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return ExportChoice(dialog.base.text().strip(), dialog.out.text().strip(), dialog.dtype.currentText())


class MergeDialog(_PathsDialog):
    """Merge an adapter into its base model and save a full model folder."""

    def __init__(self, parent: QWidget | None, base: str, out: str) -> None:
        super().__init__(parent, "Merge adapter into the base model", base, out, MERGE_DTYPES, "Output folder (new)")

    def _browse_out(self) -> None:
        parent = QFileDialog.getExistingDirectory(self, "Folder to create the merged model in", str(Path(self.out.text()).parent))
        if parent:
            self.out.setText(str(Path(parent) / Path(self.out.text()).name))

    @staticmethod
    def ask(parent: QWidget | None, base: str, out: str) -> MergeChoice | None:
        """Show the dialog; the choice, or None when cancelled."""
        dialog = MergeDialog(parent, base, out)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return MergeChoice(dialog.base.text().strip(), dialog.out.text().strip(), dialog.dtype.currentText())
