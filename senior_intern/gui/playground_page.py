"""The Playground: one prompt, the base model's answer and the adapter's answer side by side.

Generation runs on a worker thread and streams text pieces as signals; Stop is polled between
tokens. The loaded model is kept for the next prompt (loading the demo GGUF takes seconds).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from senior_intern import defaults
from senior_intern.gui.errors import describe_error
from senior_intern.gui.threads import prepare_background_thread
from senior_intern.gui.widgets import ERROR_STYLE, BusyLine

NO_ADAPTER = "(base model only)"


class ModelCache:
    """The last loaded playground (base model + adapter), reused while the choice is the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str | None] | None = None
        self._value: Any = None

    def get(self, base: str, adapter: str | None) -> Any:
        """The playground for (base, adapter), loading it when it is not the cached one."""
        with self._lock:
            if self._key != (base, adapter):
                from senior_intern.adapters.generate import load_for_playground

                self._value, self._key = None, None  # free the old model before loading a new one
                self._value = load_for_playground(base, adapter)
                self._key = (base, adapter)
            return self._value


class GenerationWorker(QObject):
    """Generates with the base model, then with the adapter, in its own thread."""

    status = Signal(str)
    token = Signal(str, str)  # side ("base" | "adapter"), text piece
    finished = Signal()
    failed = Signal(object)

    def __init__(self, cache: ModelCache, base: str, adapter_dir: str | None, prompt: str, max_new_tokens: int) -> None:
        super().__init__()
        self.cache, self.base, self.adapter_dir = cache, base, adapter_dir
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the generation to stop after the current token (thread-safe)."""
        self._stop.set()

    @Slot()
    def run(self) -> None:
        """Load (or reuse) the model and stream both answers."""
        prepare_background_thread()
        try:
            self.status.emit("Loading the model…")
            playground = self.cache.get(self.base, self.adapter_dir)
            sides = [("base", False)] + ([("adapter", True)] if self.adapter_dir else [])
            for side, use_adapter in sides:
                if self._stop.is_set():
                    break
                self.status.emit("Generating with the adapter…" if use_adapter else "Generating with the base model…")
                playground.generate(self.prompt, use_adapter, max_new_tokens=self.max_new_tokens,
                                    on_token=lambda piece, s=side: self.token.emit(s, piece), should_stop=self._stop.is_set)
        except Exception as exc:  # shown as a readable message in the page
            self.failed.emit(exc)
            return
        self.finished.emit()


class PlaygroundPage(QWidget):
    """Prompt box, base and adapter outputs side by side, Generate and Stop."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache = ModelCache()
        self._thread: QThread | None = None
        self._worker: GenerationWorker | None = None
        self._adapters: dict[str, Any] = {}

        demo = defaults.demo_model_path()
        self.base = QLineEdit(str(demo) if demo else "")
        self.base.setPlaceholderText("Base model: a .gguf file or a model folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_base)
        base_row = QHBoxLayout()
        base_row.addWidget(self.base, 1)
        base_row.addWidget(browse)
        self.adapter = QComboBox()
        self.adapter.addItem(NO_ADAPTER, None)
        self.adapter.currentIndexChanged.connect(self._adapter_chosen)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(128)
        self.max_tokens.setMaximumWidth(120)
        form = QFormLayout()
        form.addRow("Base model", base_row)
        form.addRow("Adapter", self.adapter)
        form.addRow("Max new tokens", self.max_tokens)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Write a prompt, then Generate (Ctrl+Return).")
        self.prompt.setMaximumHeight(120)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setShortcut("Ctrl+Return")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        self.busy = BusyLine()
        buttons.addWidget(self.busy, 1)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.outputs: dict[str, QPlainTextEdit] = {}
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for side, title in (("base", "Base model"), ("adapter", "With adapter")):
            box = QWidget()
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(0, 0, 0, 0)
            box_layout.addWidget(QLabel(f"<b>{title}</b>"))
            output = QPlainTextEdit()
            output.setReadOnly(True)
            box_layout.addWidget(output)
            self.outputs[side] = output
            splitter.addWidget(box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.prompt)
        layout.addLayout(buttons)
        layout.addWidget(self.error)
        layout.addWidget(splitter, 1)

    @property
    def running(self) -> bool:
        """True while a generation is in progress."""
        return self._thread is not None

    def set_adapters(self, adapters: list[Any]) -> None:
        """Offer the usable adapters of the library (keeps the current choice when still there)."""
        current = self.adapter.currentData()
        self._adapters = {a.id: a for a in adapters if not a.damaged}
        self.adapter.blockSignals(True)
        self.adapter.clear()
        self.adapter.addItem(NO_ADAPTER, None)
        for a in self._adapters.values():
            self.adapter.addItem(f"{a.name} ({a.id})", a.id)
        index = self.adapter.findData(current)
        self.adapter.setCurrentIndex(max(0, index))
        self.adapter.blockSignals(False)

    def open_adapter(self, adapter_id: str) -> bool:
        """Choose an adapter (and its base model when that file exists); False when unknown."""
        index = self.adapter.findData(adapter_id)
        if index < 0:
            return False
        self.adapter.setCurrentIndex(index)
        self._adapter_chosen()
        return True

    def _adapter_chosen(self) -> None:
        a = self._adapters.get(self.adapter.currentData())
        if a is not None and a.base_model and Path(a.base_model).exists():
            self.base.setText(a.base_model)

    def _browse_base(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", self.base.text(), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.base.setText(path)

    # --- generation -------------------------------------------------------------------------------
    def generate(self) -> None:
        """Start generating both answers for the prompt."""
        prompt, base = self.prompt.toPlainText().strip(), self.base.text().strip()
        if self.running:
            return
        if not prompt:
            self._show_error("Write a prompt first.")
            return
        if not base or not Path(base).exists():
            self._show_error(f"Base model not found: {base or '(none)'}. Choose a .gguf file or a model folder.")
            return
        adapter = self._adapters.get(self.adapter.currentData())
        self.error.hide()
        for output in self.outputs.values():
            output.clear()
        if adapter is None:
            self.outputs["adapter"].setPlaceholderText("Choose an adapter to compare.")
        worker = GenerationWorker(self.cache, base, str(adapter.path) if adapter else None, prompt, self.max_tokens.value())
        thread = QThread()
        worker.moveToThread(thread)
        queued = Qt.ConnectionType.QueuedConnection
        worker.status.connect(self._on_status, queued)
        worker.token.connect(self._on_token, queued)
        worker.finished.connect(self._on_finished, queued)
        worker.failed.connect(self._on_failed, queued)
        thread.started.connect(worker.run)
        self._thread, self._worker = thread, worker
        self.generate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        thread.start()

    def stop(self) -> None:
        """Stop the generation after the current token."""
        if self._worker is not None:
            self._worker.stop()
            self.busy.start("Stopping…")

    @Slot(str)
    def _on_status(self, text: str) -> None:
        self.busy.start(text)

    @Slot(str, str)
    def _on_token(self, side: str, piece: str) -> None:
        output = self.outputs[side]
        cursor = output.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(piece)
        output.setTextCursor(cursor)

    def _end(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        self._thread = self._worker = None
        self.busy.stop()
        self.generate_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    @Slot()
    def _on_finished(self) -> None:
        self._end()

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        self._end()
        self._show_error(describe_error(exc))

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Stop a generation in progress and wait for its thread (window closing)."""
        if self._worker is not None:
            self._worker.stop()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(timeout_ms)
