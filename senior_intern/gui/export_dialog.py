"""The Adapters page's "Export for llama.cpp / Ollama / LM Studio" dialog and the export it runs.

The dialog returns a ``RunnerExport`` choice (``ask`` is static so tests can replace it);
``run_export`` does the work on a background thread and returns the message to show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QLineEdit, QWidget

from senior_intern.gui.dialogs import DIALOG_MIN_WIDTH, _path_row, type_help_label

KINDS = {"Merged GGUF (one file)": "merged", "Adapter GGUF (base + --lora)": "adapter"}
TYPES = {"merged": ("same", "q8_0", "q4_0", "f16", "bf16"), "adapter": ("f16", "f32", "bf16", "q8_0")}


@dataclass(frozen=True)
class RunnerExport:
    """What the export dialog returns: ``kind`` is ``merged`` or ``adapter``."""

    kind: str
    base_gguf: str
    out_path: str
    qtype: str
    ollama: bool
    overwrite: bool


class RunnerExportDialog(QDialog):
    """Base GGUF, output file, kind and type, and whether to write an Ollama Modelfile."""

    def __init__(self, parent: QWidget | None, base: str, out: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export for llama.cpp / Ollama / LM Studio")
        self.kind = QComboBox()
        self.kind.addItems(list(KINDS))
        self.base = QLineEdit(base)
        self.out = QLineEdit(out)
        self.qtype = QComboBox()
        self.ollama = QCheckBox("Also write an Ollama Modelfile beside the file")
        self.ollama.setChecked(True)
        self.overwrite = QCheckBox("Replace existing files (never the base model)")
        form = QFormLayout(self)
        form.addRow("Export", self.kind)
        form.addRow("Base model (.gguf)", _path_row(self.base, self._browse_base))
        form.addRow("Output file", _path_row(self.out, self._browse_out))
        form.addRow("Type", self.qtype)
        form.addRow("", type_help_label(self.qtype))
        self.setMinimumWidth(DIALOG_MIN_WIDTH)
        form.addRow(self.ollama)
        form.addRow(self.overwrite)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.kind.currentTextChanged.connect(self._kind_changed)
        for line in (self.base, self.out):
            line.textChanged.connect(self._check)
        self._kind_changed()

    def _kind_changed(self) -> None:
        self.qtype.clear()
        self.qtype.addItems(TYPES[KINDS[self.kind.currentText()]])
        self._check()

    def _check(self) -> None:
        base = self.base.text().strip()
        ok = base.lower().endswith(".gguf") and bool(self.out.text().strip())
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)
        self.base.setToolTip("" if not base or base.lower().endswith(".gguf") else "The base must be a .gguf file")

    def _browse_base(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", self.base.text(), "GGUF models (*.gguf)")
        if path:
            self.base.setText(path)

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "GGUF file", self.out.text(), "GGUF files (*.gguf)")
        if path:
            self.out.setText(path)

    def choice(self) -> RunnerExport:
        """The current settings."""
        return RunnerExport(KINDS[self.kind.currentText()], self.base.text().strip(), self.out.text().strip(),
                            self.qtype.currentText(), self.ollama.isChecked(), self.overwrite.isChecked())

    @staticmethod
    def ask(parent: QWidget | None, base: str, out: str) -> RunnerExport | None:
        """Show the dialog; the choice, or None when cancelled."""
        dialog = RunnerExportDialog(parent, base, out)
        return dialog.choice() if dialog.exec() == QDialog.DialogCode.Accepted else None


def run_export(choice: RunnerExport, adapter_dir: str, progress: Callable[[int, int], None]) -> str:
    """Write the export (and Modelfile) for ``choice``; the summary to show. Runs off the GUI thread."""
    from senior_intern.adapters.gguf import export_gguf
    from senior_intern.adapters.gguf_merge import export_merged_gguf
    from senior_intern.adapters.modelfile import write_modelfile

    out = Path(choice.out_path)
    lines = []
    if choice.kind == "merged":
        result = export_merged_gguf(adapter_dir, choice.base_gguf, out, choice.qtype, choice.overwrite,
                                    on_progress=lambda done, total, _name: progress(done, total))
        lines.append(f"Merged GGUF written to {result.path} ({len(result.merged)} tensors merged).")
        lines += result.notes
        lines.append(f"llama.cpp: llama-cli -m {result.path}\nLM Studio: lms import {result.path}")
        target = {"merged": result.path}
    else:
        progress(0, 1)
        export_gguf(adapter_dir, choice.base_gguf, out, choice.qtype, choice.overwrite)
        progress(1, 1)
        lines.append(f"GGUF adapter written to {out}.\nllama.cpp: llama-cli -m {choice.base_gguf} --lora {out}")
        target = {"adapter": out}
    if choice.ollama:
        path, fmt = write_modelfile(out.parent, choice.base_gguf, overwrite=choice.overwrite, **target)
        lines.append(f"Ollama Modelfile written to {path}: cd {out.parent} && ollama create {out.stem.lower()} -f Modelfile")
        if fmt.template is None:
            lines.append("The base's chat template has no known Ollama mapping, so the Modelfile has no TEMPLATE.")
    return "\n".join(lines)
