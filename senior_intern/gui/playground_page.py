"""The Playground: one prompt, the base model's answer and the adapter's answer side by side.

Generation runs on a worker thread; both answers advance together a token each in turn and stream
as signals, and each side says when it is waiting, how fast it went and why it stopped. Stop is
polled between tokens. The loaded model is kept for the next prompt (loading the demo GGUF takes
seconds). Temperature, top-p, max tokens, the system prompt and the last prompts are remembered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QThread, Slot
from PySide6.QtGui import QFont, QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
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
from senior_intern.gui.generation import GenerationWorker, ModelCache
from senior_intern.gui.prompt_history import PromptHistory
from senior_intern.gui.settings import AppSettings
from senior_intern.gui.tasks import CANCELLED, DONE, FAILED, TaskRunner
from senior_intern.gui.threads import worker_thread
from senior_intern.gui.widgets import ERROR_STYLE, BusyLine

NO_ADAPTER = "(base model only)"


def monospace_font() -> QFont:
    """The system's fixed-width font (code keeps its columns)."""
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def fix_width(*buttons: QPushButton, texts: tuple[str, ...] = ()) -> None:
    """Give buttons one fixed size, wide enough for any of ``texts``, so they never move or resize."""
    width = max([b.sizeHint().width() for b in buttons] + [b.fontMetrics().horizontalAdvance(t) + 32 for b in buttons for t in texts])
    for b in buttons:
        b.setFixedSize(width, b.sizeHint().height())


class PlaygroundPage(QWidget):
    """Prompt box, sampling settings, base and adapter outputs side by side, Generate and Stop."""

    def __init__(self, settings: AppSettings | None = None, tasks: TaskRunner | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache = ModelCache()
        self.tasks = tasks
        self._loading_task: int | None = None
        self.history = PromptHistory(settings)
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
        form = QFormLayout()
        form.addRow("Base model", base_row)
        form.addRow("Adapter", self.adapter)
        form.addRow("Sampling", self._sampling_row())
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setObjectName("systemPrompt")
        self.system_prompt.setPlaceholderText("System prompt (optional): how the model should answer")
        self.system_prompt.setMaximumHeight(48)
        form.addRow("System prompt", self.system_prompt)
        self.recent = QComboBox()
        self.recent.setObjectName("recentPrompts")
        self.recent.activated.connect(self._recent_chosen)
        form.addRow("Recent prompts", self.recent)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Write a prompt, then Generate (Ctrl+Return).")
        self.prompt.setMaximumHeight(120)
        self.prompt.setFont(monospace_font())
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("generateButton")
        self.generate_button.setShortcut("Ctrl+Return")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setEnabled(False)
        fix_width(self.generate_button, self.stop_button, texts=("Generate", "Stop"))
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        self.busy = BusyLine()
        policy = self.busy.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # showing it moves nothing
        self.busy.setSizePolicy(policy)
        buttons.addWidget(self.busy, 1)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.outputs: dict[str, QPlainTextEdit] = {}
        self.side_status: dict[str, QLabel] = {}
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for side, title in (("base", "Base model"), ("adapter", "With adapter")):
            box = QWidget()
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(0, 0, 0, 0)
            box_layout.addWidget(QLabel(f"<b>{title}</b>"))
            output = QPlainTextEdit()
            output.setReadOnly(True)
            output.setFont(monospace_font())
            box_layout.addWidget(output, 1)
            status = QLabel()
            status.setObjectName(f"{side}Status")
            box_layout.addWidget(status)
            self.outputs[side], self.side_status[side] = output, status
            splitter.addWidget(box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.prompt)
        layout.addLayout(buttons)
        layout.addWidget(self.error)
        layout.addWidget(splitter, 1)
        self._restore_options()
        self._fill_recent()

    def _sampling_row(self) -> QHBoxLayout:
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(128)
        self.max_tokens.setToolTip("The most tokens each answer may have")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setValue(0.7)
        self.temperature.setToolTip("0: always the most likely token (repeatable); higher: more varied")
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.05, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setDecimals(2)
        self.top_p.setValue(0.95)
        self.top_p.setToolTip("Sample only from the most likely tokens that together make up this share")
        row = QHBoxLayout()
        for label, box in (("Max new tokens", self.max_tokens), ("Temperature", self.temperature), ("Top-p", self.top_p)):
            row.addWidget(QLabel(label))
            row.addWidget(box)
        row.addStretch(1)
        return row

    def options(self) -> dict[str, Any]:
        """The generation settings shown in the page."""
        return {"max_new_tokens": self.max_tokens.value(), "temperature": round(self.temperature.value(), 2),
                "top_p": round(self.top_p.value(), 2), "system_prompt": self.system_prompt.toPlainText().strip()}

    def _restore_options(self) -> None:
        saved = self.history.options()
        try:
            self.max_tokens.setValue(int(saved.get("max_new_tokens", self.max_tokens.value())))
            self.temperature.setValue(float(saved.get("temperature", self.temperature.value())))
            self.top_p.setValue(float(saved.get("top_p", self.top_p.value())))
            self.system_prompt.setPlainText(str(saved.get("system_prompt", "")))
        except (TypeError, ValueError):  # a damaged saved value: keep the defaults
            pass

    def _fill_recent(self) -> None:
        self.recent.clear()
        prompts = self.history.prompts()
        self.recent.addItem(f"{len(prompts)} recent prompt(s): choose one to reuse it" if prompts else "(none yet)", None)
        for text in prompts:
            self.recent.addItem(" ".join(text.split())[:80], text)
        self.recent.setEnabled(bool(prompts))

    def _recent_chosen(self, index: int) -> None:
        text = self.recent.itemData(index)
        if text:
            self.prompt.setPlainText(text)
        self.recent.setCurrentIndex(0)

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
        options = self.options()
        self.history.add(prompt)
        self.history.set_options(options)
        self._fill_recent()
        self.side_status["base"].setText("Waiting for the model to load…")
        self.side_status["adapter"].setText("Waiting for the model to load…" if adapter else "Choose an adapter to compare.")
        worker = GenerationWorker(self.cache, base, str(adapter.path) if adapter else None, prompt, options)
        thread = worker_thread(worker, [
            (worker.status, self._on_status), (worker.token, self._on_token), (worker.side_done, self._on_side_done),
            (worker.loading, self._on_loading), (worker.finished, self._on_finished), (worker.failed, self._on_failed)])
        self._thread, self._worker = thread, worker
        if self.tasks is not None and not self.cache.holds(base, worker.adapter_dir):
            self._loading_task = self.tasks.track("Playground model loading", on_cancel=self.stop)
        self.generate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        thread.start()

    def stop(self) -> None:
        """Stop the generation after the current token."""
        if self._worker is not None:
            self._worker.stop()
            self.busy.start("Stopping…")

    @Slot(int, int)
    def _on_loading(self, done: int, total: int) -> None:
        if self._loading_task is not None and self.tasks is not None:
            self.tasks.update(self._loading_task, done, total)

    def _end_loading(self, outcome: str, message: str = "") -> None:
        if self._loading_task is not None and self.tasks is not None:
            self.tasks.end(self._loading_task, outcome, message=message)
        self._loading_task = None

    @Slot(str)
    def _on_status(self, text: str) -> None:
        self.busy.start(text)
        if text.startswith("Generating"):
            self._end_loading(DONE)
            for side, label in self.side_status.items():
                if label.text().startswith("Waiting"):
                    label.setText("Generating…")

    @Slot(str, object)
    def _on_side_done(self, side: str, result: Any) -> None:
        self.side_status[side].setText(result.summary())

    @Slot(str, str)
    def _on_token(self, side: str, piece: str) -> None:
        output = self.outputs[side]
        cursor = output.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(piece)
        output.setTextCursor(cursor)

    def _end(self) -> None:
        self._end_loading(CANCELLED)  # still open: the load was stopped
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        self._thread = self._worker = None
        for label in self.side_status.values():  # a side that never answered (stopped while loading)
            if label.text().startswith(("Waiting", "Generating")):
                label.setText("Stopped before it answered.")
        self.busy.stop()
        self.generate_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    @Slot()
    def _on_finished(self) -> None:
        self._end()

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        self._end_loading(FAILED, describe_error(exc))
        self._end()
        for label in self.side_status.values():
            if not label.text().startswith("Choose"):
                label.setText("")
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
