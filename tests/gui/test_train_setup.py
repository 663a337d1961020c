"""The Train page's set-up: presets, validation as the user types, job files, tooltips."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from senior_intern.config import LoraConfig, TrainingConfig, TrainingJob, field_help
from senior_intern.defaults import PRESETS
from senior_intern.gui.job_form import GROUPS
from tests.gui.conftest import write_dataset


def _line(window, key):
    return window.train_page.form.editors[key]


def test_presets_set_the_fields(window, qtbot):
    page = window.train_page
    for name, sections in PRESETS.items():
        page.preset.setCurrentText(name)
        page.preset.activated.emit(page.preset.currentIndex())
        job, problems = page.current_job()
        assert not problems
        for section, values in sections.items():
            for key, value in values.items():
                assert getattr(getattr(job, section), key) == value, (name, section, key)
        assert page.preset.currentText() == name
        assert page.preset_description.text()
    # Editing a preset field makes the preset "Custom"; other fields keep their values.
    _line(window, "lora.rank").set(12)
    _line(window, "lora.rank").changed.emit()
    assert page.preset.currentText() == "Custom"
    assert page.current_job()[0].training.device == "cpu"


def test_invalid_values_block_start_with_the_message_next_to_the_field(window, qtbot):
    page = window.train_page
    started = []
    page.start_requested.disconnect(window._start)  # only the request is tested here, not a run
    page.start_requested.connect(started.append)
    assert page.is_valid and page.start_button.isEnabled()

    rank = _line(window, "lora.rank")
    rank.box.setValue(0)
    assert not page.is_valid
    assert not page.start_button.isEnabled()
    assert not window.actions_["start"].isEnabled()
    assert page.form.message("lora.rank") == "LoRA rank must be between 1 and 256"
    assert "✖" in page.form.tabs.tabText(0)
    assert "LoRA rank must be between 1 and 256" in page.problems_label.text()
    page.start()
    window.actions_["start"].trigger()
    assert started == []

    lr = _line(window, "training.learning_rate")
    lr.line.setText("fast")
    assert "'fast' is not a number" in page.form.message("training.learning_rate")
    lr.line.setText("-1e-4")
    assert page.form.message("training.learning_rate") == "Learning rate must be positive"

    lr.line.setText("2e-4")
    rank.box.setValue(8)
    assert page.is_valid and page.start_button.isEnabled()
    assert page.form.message("lora.rank") == ""
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert len(started) == 1 and isinstance(started[0], TrainingJob)
    assert started[0].lora.rank == 8 and started[0].training.learning_rate == 2e-4


def test_warnings_are_shown_but_allow_start(window):
    page = window.train_page
    _line(window, "training.epochs").box.setValue(25)
    assert page.form.message("training.epochs") == "More than 20 epochs may cause overfitting"
    assert page.is_valid and page.start_button.isEnabled()


def test_missing_dataset_is_an_error_next_to_the_picker(window, tmp_path):
    page = window.train_page
    page.dataset_picker.set_path(str(tmp_path / "nope.jsonl"))
    assert not page.is_valid
    assert "Dataset not found" in page.dataset_picker.message.text()
    assert not page.dataset_picker.message.isHidden()


def test_every_validation_message_has_a_field():
    bad = TrainingJob(name="a/b", base_model_path="", dataset_path="", output_dir="", validation_path="/nope", validation_split=2)
    t, lo = bad.training, bad.lora
    t.epochs = t.batch_size = t.gradient_accumulation_steps = t.num_cycles = t.cycle_multiplier = t.max_checkpoints = 0
    t.learning_rate, t.warmup_steps, t.weight_decay, t.min_learning_rate = 0, -1, -1, -1
    t.adam_beta1, t.adam_epsilon, t.momentum, t.nesterov, t.polynomial_power = 2, 0, -1, True, 0
    t.max_seq_length, t.max_steps, t.eval_every, t.early_stopping_patience = 4, 0, -1, -1
    t.early_stopping_min_delta, t.max_grad_norm, t.max_nonfinite_steps, t.loss_chunk_size, t.dtype = -1, -1, 0, 0, "int4"
    t.device, t.processes = "tpu", 0
    lo.rank, lo.alpha, lo.dropout, lo.target_modules, lo.init_scale = 0, 0, 1, [], 0
    bad.data.window_overlap, bad.data.max_file_bytes = -1, 0
    result = bad.validate(available_devices=["cpu"])
    assert len(result.errors) > 30
    keys = {k for _, fields in GROUPS for k, _ in fields} | {"base_model_path", "dataset_path"}
    bad.training.learning_rate = float("nan")  # the finite-number rule names its field too
    result = bad.validate(available_devices=["cpu"])
    assert any(i.message.startswith("training.learning_rate must be a finite") for i in result.issues)
    for issue in result.issues:
        assert issue.fields and set(issue.fields) <= keys, issue


def test_tooltips_come_from_the_field_help(window):
    form = window.train_page.form
    assert form.editors["lora.rank"].widget.toolTip() == field_help(LoraConfig, "rank")
    assert form.editors["training.warmup_steps"].widget.toolTip() == field_help(TrainingConfig, "warmup_steps")


def test_save_and_load_a_job_file(window, monkeypatch, tmp_path):
    page = window.train_page
    _line(window, "training.epochs").box.setValue(7)
    _line(window, "lora.target_modules").line.setText("q_proj, v_proj")
    target = tmp_path / "jobs" / "mine.toml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    window.actions_["save_job"].trigger()
    saved = TrainingJob.load(target)
    assert saved.training.epochs == 7 and saved.lora.target_modules == ["q_proj", "v_proj"]

    _line(window, "training.epochs").box.setValue(1)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(target), "")))
    window.actions_["load_job"].trigger()
    job, _ = page.current_job()
    assert job.training.epochs == 7 and job.lora.target_modules == ["q_proj", "v_proj"]
    assert window.settings.last_path("job") == str(target)


def test_a_bad_job_file_gives_a_readable_message(window, monkeypatch, tmp_path, messages):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nepochs = 'three'\n")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(bad), "")))
    window.train_page.load_job_dialog()
    assert messages and messages[-1][0] == "warning"
    assert "training.epochs" in messages[-1][2] and "Traceback" not in messages[-1][2]


def test_browse_buttons_use_the_file_dialog(window, monkeypatch, tiny_model_dir: Path, tmp_path: Path):
    page = window.train_page
    dataset_file = write_dataset(tmp_path / "other.jsonl", n=8)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tiny_model_dir)))
    window.actions_["open_model_folder"].trigger()
    assert page.model_picker.path() == str(tiny_model_dir)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(dataset_file), "")))
    window.actions_["open_dataset"].trigger()
    assert page.dataset_picker.path() == str(dataset_file)
    assert window.settings.last_path("dataset") == str(dataset_file)


def test_issues_are_data_the_form_marks_without_reading_their_words(window):
    """A rule's message can be reworded without the form losing its field (no prefix table)."""
    from senior_intern.validation import Severity

    job = TrainingJob(name="x", base_model_path="", dataset_path="", output_dir="o")
    job.training.adam_beta2, job.training.epochs = 1.5, 25
    result = job.validate()
    betas = [i for i in result.issues if "training.adam_beta2" in i.fields]
    assert betas and betas[0].severity is Severity.ERROR and "training.adam_beta1" in betas[0].fields
    epochs = [i for i in result.issues if i.fields == ("training.epochs",)]
    assert epochs and epochs[0].severity is Severity.WARNING
    assert result.warnings == [i.message for i in result.issues if i.severity is Severity.WARNING]
    assert not result.is_valid and "Adam betas must be in [0, 1)" in result.errors


def test_the_preset_text_takes_its_duration_from_the_estimate(window, qtbot):
    from senior_intern.gui.run_page import format_duration

    page = window.train_page
    page.preset.setCurrentText("quick")
    page.preset.activated.emit(page.preset.currentIndex())
    assert "laptop" not in page.preset_description.text()  # no fixed figure
    estimates = []
    page.estimate.estimate_changed.connect(estimates.append)
    qtbot.waitUntil(lambda: any(e is not None for e in estimates), timeout=60000)
    est = [e for e in estimates if e is not None][-1]
    text = page.preset_description.text()
    assert text.startswith("Quick test") and f"about {format_duration(est.duration_seconds)} on {est.device}" in text
    assert f"about {format_duration(est.duration_seconds)}" in page.estimate.value("Duration")  # the same figure
    _line(window, "lora.rank").set(12)
    _line(window, "lora.rank").changed.emit()  # a new estimate is on its way: no stale duration
    assert page.preset.currentText() == "Custom"
    qtbot.waitUntil(lambda: "once the estimate is ready" in page.preset_description.text() or estimates[-1] is not None, timeout=60000)
