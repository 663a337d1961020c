"""The Train page: pick a base model and a dataset, set the job up, check it, start it.

Model details and the dataset analysis run on background threads (they need transformers);
validation runs on every edit and is cheap. Errors block Start and sit next to their field;
warnings are shown but allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import html
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from senior_intern.config import TrainingJob
from senior_intern.defaults import PRESET_DESCRIPTIONS, PRESETS, apply_preset
from senior_intern.gui import analysis, doctor
from senior_intern.gui.dataset_panel import DatasetPanel
from senior_intern.gui.errors import describe_error
from senior_intern.gui.estimate_panel import EstimatePanel
from senior_intern.gui.job_form import JobForm
from senior_intern.gui.run_page import format_duration
from senior_intern.gui.settings import AppSettings
from senior_intern.gui.tasks import TaskRunner
from senior_intern.gui.widgets import ERROR_STYLE, BusyLine, PathPicker

MODEL_FILTER = "GGUF models (*.gguf);;All files (*)"
DATASET_FILTER = "Datasets (*.jsonl *.json *.txt *.md);;Source code (*.py *.rs *.js *.ts *.go *.java *.c *.cpp *.h *.cs);;All files (*)"
CUSTOM = "Custom"
ANALYSIS_DELAY_MS = 400


def _analysis_key(job: TrainingJob) -> tuple:
    t = job.training
    return (job.base_model_path, job.dataset_path, job.validation_path, job.validation_split, repr(dataclasses.asdict(job.data)),
            t.max_seq_length, t.batch_size, t.gradient_accumulation_steps, t.packing, t.seed, t.epochs, t.max_steps,
            t.processes)


class TrainPage(QWidget):
    """Set-up of a training job; ``start_requested(job)`` when the user starts a valid one."""

    start_requested = Signal(object)
    validity_changed = Signal(bool)

    def __init__(self, settings: AppSettings, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings, self.tasks = settings, tasks
        self._job = TrainingJob()
        self._analysis: analysis.DatasetAnalysis | None = None
        self._analysis_for: tuple | None = None
        self._details_quantization: str | None = None  # the base quantization the model card shows
        self._analysis_error = ""
        self._diagnosis: doctor.Diagnosis | None = None
        self._running = False
        self._valid = False
        self._problems: list[str] = []
        self._devices: list[str] | None = None  # what torch sees here, once known: bounds the processes

        self.model_picker = PathPicker("Base model", MODEL_FILTER, True, "Drop a .gguf file or a model folder here")
        self.model_picker.start_folder = lambda: self.settings.start_folder("model")
        self.model_busy = BusyLine()
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.dataset_picker = PathPicker("Dataset", DATASET_FILTER, True, "Drop a .jsonl/.json/.txt file or a folder of code here")
        self.dataset_picker.start_folder = lambda: self.settings.start_folder("dataset")
        self.dataset_panel = DatasetPanel()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        for widget in (self.model_picker, self.model_busy, self.model_info, self.dataset_picker):
            left_layout.addWidget(widget)
        left_layout.addWidget(self.dataset_panel, 1)
        left_scroll = QScrollArea()
        left_scroll.setWidgetResizable(True)
        left_scroll.setWidget(left)

        self.preset = QComboBox()
        self.preset.addItems([CUSTOM, *PRESETS])
        self.preset.setToolTip("\n".join(PRESET_DESCRIPTIONS.values()))
        self.preset_description = QLabel()
        self.preset_description.setWordWrap(True)
        self.form = JobForm()
        self.problems_label = QLabel()
        self.problems_label.setWordWrap(True)
        self.problems_label.setStyleSheet(ERROR_STYLE)
        self.warnings_label = QLabel()
        self.warnings_label.setWordWrap(True)
        self.estimate = EstimatePanel(tasks)
        self._duration_note = " The duration shows once the estimate is ready."
        self.estimate.estimate_changed.connect(self._estimate_changed)
        self.save_button = QPushButton("Save job…")
        self.load_button = QPushButton("Load job…")
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.setObjectName("startButton")
        self.load_button.setObjectName("loadButton")
        self.save_button.setObjectName("saveButton")
        self.model_picker.setObjectName("modelDropZone")
        self.dataset_picker.setObjectName("datasetDropZone")
        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset"))
        preset_row.addWidget(self.preset)
        preset_row.addWidget(self.preset_description, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addLayout(preset_row)
        right_layout.addWidget(self.form, 1)
        right_layout.addWidget(self.estimate)
        right_layout.addWidget(self.problems_label)
        right_layout.addWidget(self.warnings_label)
        # The form scrolls; Load, Save and Start sit in a footer below both panes, so they stay
        # on screen however small the window (a 1366x768 laptop) and however long the form.
        right_scroll = QScrollArea()
        right_scroll.setWidgetResizable(True)
        right_scroll.setWidget(right)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left_scroll)
        splitter.addWidget(right_scroll)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        self.footer = QWidget()
        self.footer.setObjectName("trainFooter")
        self.footer.setLayout(buttons)
        buttons.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.footer)

        self._analysis_timer = QTimer(self)
        self._analysis_timer.setSingleShot(True)
        self._analysis_timer.setInterval(ANALYSIS_DELAY_MS)
        self._analysis_timer.timeout.connect(self._analyze)
        self.model_picker.path_changed.connect(self._model_changed)
        self.dataset_picker.path_changed.connect(self._dataset_changed)
        self.form.changed.connect(self._edited)
        self.preset.activated.connect(lambda index: self.apply_preset(self.preset.itemText(index)))
        self.start_button.clicked.connect(self.start)
        self.save_button.clicked.connect(self.save_job_dialog)
        self.load_button.clicked.connect(self.load_job_dialog)
        self.tasks.submit(analysis.device_names, on_done=self._set_devices, name="device check")

    # --- the job ----------------------------------------------------------------------------------
    def set_job(self, job: TrainingJob) -> None:
        """Show ``job`` in the page (paths, fields) and refresh details, analysis and validation."""
        self._job = copy.deepcopy(job)
        self.model_picker.set_path(job.base_model_path, emit=False)
        self.dataset_picker.set_path(job.dataset_path, emit=False)
        self.form.set_job(self._job)
        self._sync_preset()
        self._load_model_details()
        self._edited()

    def current_job(self) -> tuple[TrainingJob, dict[str, str]]:
        """The job as shown (a fresh copy) and {field: problem} for fields that could not be read."""
        job = copy.deepcopy(self._job)
        job.base_model_path = self.model_picker.path()
        job.dataset_path = self.dataset_picker.path()
        problems = self.form.apply_to(job)
        return job, problems

    @property
    def is_valid(self) -> bool:
        """True when Start is allowed (no error; warnings allowed)."""
        return self._valid

    @property
    def problems(self) -> list[str]:
        """The errors that block Start, as shown."""
        return list(self._problems)

    @property
    def analysis(self) -> analysis.DatasetAnalysis | None:
        """The latest dataset analysis (None while none matches the current settings)."""
        return self._analysis

    def apply_preset(self, name: str) -> None:
        """Set the preset's fields (other fields keep their values)."""
        if name not in PRESETS:
            self._sync_preset()
            return
        job, _ = self.current_job()
        apply_preset(job, name)
        self._job = job
        self.form.set_job(job)
        self._edited()

    def _sync_preset(self) -> None:
        job, _ = self.current_job()
        match = next((name for name, sections in PRESETS.items()
                      if all(getattr(getattr(job, sec), k) == v for sec, values in sections.items() for k, v in values.items())), CUSTOM)
        self.preset.setCurrentText(match)
        self.preset_description.setText(PRESET_DESCRIPTIONS.get(match, "Your own settings.") + self._duration_note)

    def _estimate_changed(self, est) -> None:
        """The preset's text takes its duration from the estimate for this model, dataset and machine."""
        if est is None:
            self._duration_note = " The duration shows once the estimate is ready."
        else:
            self._duration_note = f" Here: about {format_duration(est.duration_seconds)} on {est.device} (the estimate)."
        self._sync_preset()

    # --- edits and validation -----------------------------------------------------------------------
    def _model_changed(self, path: str) -> None:
        if path:
            self.settings.set_last_path("model", path)
        self._load_model_details()
        self._edited()

    def _dataset_changed(self, path: str) -> None:
        if path:
            self.settings.set_last_path("dataset", path)
        self._edited()

    def _edited(self) -> None:
        job, parse_problems = self.current_job()
        self._sync_preset()
        if job.training.base_quantization != self._details_quantization:  # the card says how it is held
            self._load_model_details()
        key = _analysis_key(job)
        if key != self._analysis_for:
            self._analysis, self._analysis_error, self._diagnosis = None, "", None
            readable = all(p and Path(p).exists() for p in (job.base_model_path, job.dataset_path))
            if readable and not parse_problems:
                self._analysis_timer.start()
            else:
                self._analysis_timer.stop()
                self.tasks.forget("dataset analysis")
                self.dataset_panel.clear()
        self._validate(job, parse_problems)

    def _set_devices(self, names: list[str]) -> None:
        self._devices = list(names)
        self._validate(*self.current_job())

    def _validate(self, job: TrainingJob, parse_problems: dict[str, str]) -> None:
        total = self._analysis.total_steps if self._analysis else None
        result = job.validate(total_steps=total, available_devices=self._devices)
        errors: dict[str, list[str]] = {k: [v] for k, v in parse_problems.items()}
        warnings: dict[str, list[str]] = {}
        general_errors, general_warnings = [], []
        model_errors, dataset_errors = [], []
        for issue in result.issues:
            bucket, general = (errors, general_errors) if issue.severity == "error" else (warnings, general_warnings)
            keys = [k for k in issue.fields if self.form.has_field(k)]
            for k in keys:
                bucket.setdefault(k, []).append(issue.message)
            if not keys:
                general.append(issue.message)
                if issue.severity == "error" and issue.fields == ("base_model_path",):
                    model_errors.append(issue.message)
                elif issue.severity == "error" and issue.fields == ("dataset_path",):
                    dataset_errors.append(issue.message)
        if self._diagnosis is not None and self._diagnosis.about == "model":
            model_errors.append(self._diagnosis.message)
        self.model_picker.show_message("\n".join(model_errors))
        self.dataset_picker.show_message("\n".join(dataset_errors))
        self.form.show_messages(errors, warnings)
        self._problems = [f"{k}: {v[0]}" if k in parse_problems else v[0] for k, v in errors.items()] + general_errors
        if self._analysis_error:
            self._problems.append(self._analysis_error)
        self.problems_label.setText("Fix before starting:\n• " + "\n• ".join(self._problems) if self._problems else "")
        self.problems_label.setVisible(bool(self._problems))
        self.warnings_label.setText("\n".join(f"⚠ {w}" for w in general_warnings))
        self.warnings_label.setVisible(bool(general_warnings))
        self.estimate.update_for(job, self._analysis)
        valid = not self._problems
        if valid != self._valid:
            self._valid = valid
            self.validity_changed.emit(valid)
        self.start_button.setEnabled(valid and not self._running)

    # --- background work --------------------------------------------------------------------------
    def _load_model_details(self) -> None:
        path = self.model_picker.path()
        self.model_info.clear()
        self._details_quantization = self.current_job()[0].training.base_quantization
        if not path or not Path(path).exists():
            self.model_busy.stop()
            self.tasks.forget("model details")
            return
        self.model_busy.start("Reading the model…")
        self.tasks.submit(analysis.model_details, path, self._details_quantization, on_done=self._model_details_ready,
                          on_error=self._model_details_failed, latest="model details", name="Reading the model")

    def _model_details_ready(self, facts: dict[str, str]) -> None:
        self.model_busy.stop()
        rows = "".join(f"<tr><td>{html.escape(k)}&nbsp;&nbsp;</td><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
        self.model_info.setText(f"<table>{rows}</table>")

    def _model_details_failed(self, exc: BaseException) -> None:
        self.model_busy.stop()
        self.model_info.setText(f"<span style='{ERROR_STYLE}'>Could not read the model: {html.escape(describe_error(exc))}</span>")

    def _analyze(self) -> None:
        job, problems = self.current_job()
        if problems:
            return
        key = _analysis_key(job)
        cached = analysis.tokenizer_cached(job.base_model_path)
        self.dataset_panel.set_busy("Reading the dataset…" if cached else "Loading the tokenizer and reading the dataset…")
        self.tasks.submit(doctor.analyze, job, on_done=lambda result: self._analysis_ready(key, result),
                          on_error=lambda exc: self._analysis_failed(key, exc), latest="dataset analysis",
                          name="Dataset scan" if cached else "Tokenizer loading and dataset scan", control=True)

    def _analysis_ready(self, key: tuple, result: analysis.DatasetAnalysis) -> None:
        self._analysis, self._analysis_for, self._analysis_error, self._diagnosis = result, key, "", None
        self.dataset_panel.set_analysis(result)
        self._edited()

    def _analysis_failed(self, key: tuple, exc: BaseException) -> None:
        self._analysis, self._analysis_for = None, key  # not retried until a relevant setting changes
        job, _ = self.current_job()
        self._diagnosis = diagnosis = doctor.diagnose(exc, job)
        if diagnosis.about == "model":
            # Shown under the model picker (by _validate); the dataset itself is not at fault.
            self._analysis_error = "The base model cannot be read (see under Base model)."
            self.dataset_panel.set_note("The dataset is checked once the base model can be read.")
        else:
            self._analysis_error = "The dataset has a problem (see under Dataset)."
            self.dataset_panel.set_error(diagnosis.message, [(fix.label, lambda _=False, fix=fix: self.apply_fix(fix))
                                                             for fix in diagnosis.fixes])
        self._edited()

    def apply_fix(self, fix: doctor.Fix) -> None:
        """Make a dataset-doctor fix in the job (skip bad records, another format) and re-check."""
        job, _ = self.current_job()
        fix.apply(job)
        self._job = job
        self.form.set_job(job)
        self._edited()

    # --- actions ----------------------------------------------------------------------------------
    def stop_background_work(self) -> None:
        """Start no more analyses and drop the results of those in progress (the window closes)."""
        self._analysis_timer.stop()
        for name in ("dataset analysis", "model details"):
            self.tasks.forget(name)

    def set_running(self, running: bool) -> None:
        """Disable Start while a run is in progress."""
        self._running = running
        self.start_button.setEnabled(self._valid and not running)

    def start(self) -> None:
        """Ask to start the job when it is valid; otherwise show where the problem is."""
        job, problems = self.current_job()
        self._validate(job, problems)
        if not self._valid or self._running:
            first = next((k for k in self.form.editors if self.form.message(k) and k in problems), None)
            if first:
                self.form.focus_field(first)
            return
        self.settings.set_last_job(job)
        self.start_requested.emit(job)

    def handle_drop(self, paths: list[str]) -> list[str]:
        """Use dropped paths: a model file/folder becomes the base model, anything else the dataset."""
        used = []
        for path in paths:
            if analysis.is_model_path(path):
                self.model_picker.set_path(path)
                used.append(f"model: {path}")
            elif Path(path).exists():
                self.dataset_picker.set_path(path)
                used.append(f"dataset: {path}")
        return used

    def save_job_dialog(self) -> None:
        """Save the job as a TOML file."""
        job, _ = self.current_job()
        start = str(Path(self.settings.start_folder("job")) / f"{job.name or 'job'}.toml")
        path, _ = QFileDialog.getSaveFileName(self, "Save job", start, "Job files (*.toml)")
        if not path:
            return
        try:
            job.save(path)
        except OSError as exc:
            QMessageBox.warning(self, "Could not save the job", describe_error(exc))
            return
        self.settings.set_last_path("job", path)

    def load_job_dialog(self) -> None:
        """Load a job from a TOML file."""
        path, _ = QFileDialog.getOpenFileName(self, "Load job", self.settings.start_folder("job"), "Job files (*.toml);;All files (*)")
        if path:
            self.load_job(path)

    def load_job(self, path: str) -> bool:
        """Read a job file into the page; a readable message when it cannot be read."""
        try:
            job = TrainingJob.load(path)
        except (ValueError, OSError) as exc:
            QMessageBox.warning(self, "Could not load the job", describe_error(exc))
            return False
        self.settings.set_last_path("job", path)
        self.set_job(job)
        return True
