"""The Adapters page's exports: a GGUF adapter, a merged model folder, and a merged or adapter GGUF
for llama.cpp / Ollama / LM Studio, each a named background task with progress, Cancel where the
writer allows it, and an end notice with the file and the next command (``gui/activity.py``).

``ExportActions`` is mixed into ``AdaptersPage``, which provides ``selected()``, ``_run()``,
``tasks``, ``busy``, ``export_bar``, the ``export_progress`` signal and ``_failed()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices

from senior_intern import defaults, paths
from senior_intern.gui.dialogs import ExportGgufDialog, MergeDialog
from senior_intern.gui.export_dialog import RunnerExportDialog, run_export

EXPORT_FOR_RUNNERS = "Export for llama.cpp / Ollama / LM Studio…"


def _export_gguf(adapter_dir: str, base: str, out: str, dtype: str) -> Path:
    from senior_intern.adapters.gguf import export_gguf

    return export_gguf(adapter_dir, base, out, dtype)


def _merge(adapter_dir: str, base: str, out: str, dtype: str, task: Any = None) -> str:
    from senior_intern.adapters.merge import gguf_convert_hint, merge_adapter

    merge_adapter(adapter_dir, base, out, dtype, on_progress=task.progress if task is not None else None)
    return gguf_convert_hint(out)


def _export_for_runners(choice: Any, adapter_dir: str, emit: Any, task: Any) -> str:
    """``run_export`` with its per-tensor progress sent to the page's bar and the activity centre (cancellable)."""

    def progress(done: int, total: int) -> None:
        """Show ``done`` of ``total`` tensors; raises TaskCancelled after a cancel."""
        emit(done, total)
        task.progress(done, total)

    return run_export(choice, adapter_dir, progress)



class ExportActions:
    """The export actions of the Adapters page (see the module docstring)."""

    def _default_base(self, a: Any) -> str:
        if a.base_model and Path(a.base_model).exists():
            return a.base_model
        demo = defaults.demo_model_path()
        return str(demo) if demo else ""

    def export_gguf_selected(self) -> None:
        """Export the selected adapter as a GGUF LoRA file."""
        a = self.selected()
        if a is None or a.damaged:
            return
        base = self._default_base(a)
        if base and not base.lower().endswith(".gguf"):
            demo = defaults.demo_model_path()
            base = str(demo) if demo else base
        choice = ExportGgufDialog.ask(self, base, str(paths.exports_dir() / f"{a.id}.lora.gguf"))
        if choice is not None:
            self._run(_export_gguf, str(a.path), choice.base_model, choice.out_path, choice.dtype, select=a.id,
                      title="Export GGUF", name="GGUF adapter export", result_path=lambda path: path,
                      result_note=lambda path: f"llama.cpp: llama-cli -m {choice.base_model} --lora {path}")

    def merge_selected(self) -> None:
        """Merge the selected adapter into its base model and save the merged model."""
        a = self.selected()
        if a is None or a.damaged:
            return
        choice = MergeDialog.ask(self, self._default_base(a), str(paths.exports_dir() / f"{a.id}-merged"))
        if choice is not None:
            self._run(_merge, str(a.path), choice.base_model, choice.out_dir, choice.dtype, select=a.id,
                      title="Merge adapter", name="Merge", result_path=lambda _: choice.out_dir, cancellable=True,
                      result_note=lambda command: f"To make a GGUF of it with llama.cpp: {command}")

    def export_for_runners_selected(self) -> None:
        """Export the selected adapter as a merged or adapter GGUF (and Modelfile); open the folder at the end."""
        a = self.selected()
        if a is None or a.damaged:
            return
        base = self._default_base(a)
        if not base.lower().endswith(".gguf"):
            demo = defaults.demo_model_path()
            base = str(demo) if demo else ""
        choice = RunnerExportDialog.ask(self, base, str(paths.exports_dir() / f"{a.id}.gguf"))
        if choice is None:
            return
        self.export_bar.setRange(0, 0)
        self.export_bar.show()
        self.busy.start("Exporting…")

        def done(_message: str) -> None:
            """Open the folder that holds the export (the notice says what was written and how to run it)."""
            self.busy.stop()
            self.export_bar.hide()
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(choice.out_path).parent)))

        def failed(exc: BaseException) -> None:
            """Hide the progress bar and report the error."""
            self.export_bar.hide()
            self._failed(exc, EXPORT_FOR_RUNNERS)

        def cancelled() -> None:
            """Hide the progress (the partial file is already removed)."""
            self.busy.stop()
            self.export_bar.hide()

        self.tasks.submit(_export_for_runners, choice, str(a.path), self.export_progress.emit, on_done=done, on_error=failed,
                          on_cancelled=cancelled, name="GGUF export", control=True, cancellable=True,
                          result_path=lambda _: choice.out_path, result_note=lambda message: message)

    def _export_progress(self, done: int, total: int) -> None:
        self.export_bar.setRange(0, total)
        self.export_bar.setValue(done)
