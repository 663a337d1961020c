"""``JobForm``: the job's settings, grouped in tabs, built from the config dataclasses.

Every field's tooltip is its help text from ``config.py``. Validation messages from
``TrainingJob.validate()`` are shown next to the field they are about (errors in red, warnings
in amber) and the tab title is marked, so a blocked Start always points at what to fix.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QFormLayout, QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from senior_intern.config import DataConfig, LoraConfig, TrainingConfig, TrainingJob, field_help
from senior_intern.gui.editors import Editor, IntEditor, ListEditor, PathEditor, make_editor

_CLASSES = {"": TrainingJob, "lora": LoraConfig, "training": TrainingConfig, "data": DataConfig}

# (group, [(key, label)]) in display order. The model and dataset pickers live on the Train page.
GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Basics", [
        ("name", "Job name"), ("training.epochs", "Epochs"), ("training.batch_size", "Batch size"),
        ("training.processes", "Processes / GPUs"),
        ("training.learning_rate", "Learning rate"), ("lora.rank", "LoRA rank"), ("lora.alpha", "LoRA alpha"),
        ("training.max_seq_length", "Max sequence length"), ("description", "Description"),
    ]),
    ("LoRA", [
        ("lora.dropout", "Dropout"), ("lora.target_modules", "Target modules"), ("lora.init_method", "Init method"),
        ("lora.init_scale", "Init scale"), ("lora.bias", "Bias"), ("lora.apply_to_embeddings", "Adapt embeddings"),
        ("lora.apply_to_lm_head", "Adapt LM head"),
    ]),
    ("Optimizer & schedule", [
        ("training.optimizer", "Optimizer"), ("training.gradient_accumulation_steps", "Gradient accumulation"),
        ("training.weight_decay", "Weight decay"), ("training.lr_scheduler", "LR schedule"),
        ("training.warmup_steps", "Warm-up steps"), ("training.min_learning_rate", "Min learning rate"),
        ("training.num_cycles", "Cycles (restarts)"), ("training.cycle_multiplier", "Cycle multiplier"),
        ("training.polynomial_power", "Polynomial power"), ("training.adam_beta1", "Adam beta1"),
        ("training.adam_beta2", "Adam beta2"), ("training.adam_epsilon", "Epsilon"), ("training.momentum", "Momentum"),
        ("training.nesterov", "Nesterov"), ("training.rmsprop_alpha", "RMSprop alpha"),
        ("training.max_grad_norm", "Max gradient norm"),
    ]),
    ("Checkpoints & early stopping", [
        ("training.eval_every", "Evaluate every (steps)"), ("training.save_every", "Save every (steps)"),
        ("training.max_checkpoints", "Checkpoints kept"), ("training.early_stopping_patience", "Patience"),
        ("training.early_stopping_min_delta", "Min improvement"), ("output_dir", "Run folder"),
        ("adapters_dir", "Adapter library"),
    ]),
    ("Data", [
        ("data.format", "Format"), ("validation_split", "Validation split"), ("validation_path", "Validation file"),
        ("training.packing", "Pack samples"), ("data.code_extensions", "Code extensions"),
        ("data.window_overlap", "Window overlap"), ("data.max_file_bytes", "Max file size (bytes)"),
        ("data.skip_malformed", "Skip malformed records"), ("data.column_map", "Column map"),
    ]),
    ("Advanced", [
        ("training.max_steps", "Max steps"), ("training.seed", "Seed"), ("training.device", "Device"),
        ("training.dtype", "Dtype"), ("training.base_quantization", "Base quantization"),
        ("training.gradient_checkpointing", "Gradient checkpointing"),
        ("training.loss_chunk_size", "Loss chunk size"), ("training.max_nonfinite_steps", "Max non-finite steps"),
    ]),
]
_CHOICES = {"training.device": ["auto", "cpu", "cuda", "mps"], "training.dtype": ["auto", "float32", "bfloat16", "float16"],
            "training.base_quantization": ["none", "int8", "int4", "auto"]}
_FOLDERS = ("output_dir", "adapters_dir")
_FILES = ("validation_path",)

def _split(key: str) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    return section, name


def _get(job: TrainingJob, key: str) -> Any:
    section, name = _split(key)
    return getattr(getattr(job, section) if section else job, name)


def _set(job: TrainingJob, key: str, value: Any) -> None:
    section, name = _split(key)
    setattr(getattr(job, section) if section else job, name, value)


class JobForm(QWidget):
    """Tabs of field editors for one ``TrainingJob``; ``changed`` on every edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.editors: dict[str, Editor] = {}
        self._messages: dict[str, QLabel] = {}
        self._tab_of: dict[str, int] = {}
        self._titles: list[str] = []
        for group, fields in GROUPS:
            self._add_group(group, fields)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)

    def _add_group(self, title: str, fields: list[tuple[str, str]]) -> None:
        page = QWidget()
        form = QFormLayout(page)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, label in fields:
            editor = self._make(key)
            tip = field_help(_CLASSES[_split(key)[0]], _split(key)[1])
            editor.widget.setToolTip(tip)
            message = QLabel()
            message.setWordWrap(True)
            message.hide()
            cell = QWidget()
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(2)
            box.addWidget(editor.widget)
            box.addWidget(message)
            name = QLabel(label)
            name.setToolTip(tip)
            form.addRow(name, cell)
            editor.changed.connect(self.changed)
            self.editors[key], self._messages[key], self._tab_of[key] = editor, message, self.tabs.count()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(page)
        self.tabs.addTab(scroll, title.replace("&", "&&"))
        self._titles.append(title)

    def _make(self, key: str) -> Editor:
        section, name = _split(key)
        hint = typing.get_type_hints(_CLASSES[section])[name]
        if key in _FOLDERS or key in _FILES:
            folder = key in _FOLDERS
            return PathEditor(lambda current: self._browse(current, folder), optional=key in _FILES,
                              placeholder="default" if key == "adapters_dir" else "")
        if key == "lora.target_modules":
            return ListEditor("q_proj, v_proj … or all-linear")
        if key == "training.processes":
            editor = IntEditor()
            editor.box.setMinimum(1)  # the most is the machine's: validation names it
            return editor
        return make_editor(hint, _CHOICES.get(key))

    def _browse(self, current: str, folder: bool) -> str | None:
        start = current or str(Path.home())
        if folder:
            return QFileDialog.getExistingDirectory(self, "Choose a folder", start) or None
        path, _ = QFileDialog.getOpenFileName(self, "Choose a validation file", start,
                                              "Datasets (*.jsonl *.json *.txt *.md);;All files (*)")
        return path or None

    # --- values -----------------------------------------------------------------------------------
    def set_job(self, job: TrainingJob) -> None:
        """Show every field of ``job`` (no ``changed`` signals while filling)."""
        for key, editor in self.editors.items():
            editor.set(_get(job, key))

    def apply_to(self, job: TrainingJob) -> dict[str, str]:
        """Write the readable fields into ``job``; return {field: problem} for those that are not."""
        problems: dict[str, str] = {}
        for key, editor in self.editors.items():
            try:
                _set(job, key, editor.get())
            except ValueError as exc:
                problems[key] = str(exc)
        return problems

    # --- messages ---------------------------------------------------------------------------------
    def show_messages(self, errors: dict[str, list[str]], warnings: dict[str, list[str]]) -> None:
        """Show each field's errors (red) and warnings (amber) under it; mark tabs with errors."""
        bad_tabs, warn_tabs = set(), set()
        for key, label in self._messages.items():
            errs, warns = errors.get(key, []), warnings.get(key, [])
            if errs:
                label.setText("\n".join(errs))
                label.setStyleSheet("color: #d32f2f;")
                bad_tabs.add(self._tab_of[key])
            elif warns:
                label.setText("\n".join(warns))
                label.setStyleSheet("color: #b26a00;")
                warn_tabs.add(self._tab_of[key])
            label.setVisible(bool(errs or warns))
        for index, title in enumerate(self._titles):
            mark = " ✖" if index in bad_tabs else " ⚠" if index in warn_tabs else ""
            self.tabs.setTabText(index, title.replace("&", "&&") + mark)

    def message(self, key: str) -> str:
        """The message shown next to a field ('' when none)."""
        label = self._messages[key]
        return "" if label.isHidden() else label.text()

    def has_field(self, key: str) -> bool:
        """True when the form has an editor for ``key``."""
        return key in self.editors

    def focus_field(self, key: str) -> None:
        """Show the tab of ``key`` and put the cursor in its editor."""
        if key in self.editors:
            self.tabs.setCurrentIndex(self._tab_of[key])
            self.editors[key].widget.setFocus()
