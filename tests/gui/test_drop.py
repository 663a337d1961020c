"""Dropping files and folders on the window fills the set-up and the dataset preview."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

from senior_intern.gui.analysis import is_model_path
from tests.gui.conftest import write_code_folder


def _mime(*paths: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop(widget, *paths: Path) -> bool:
    """Deliver a drag-enter and a drop of ``paths`` to ``widget``; True when the drop was accepted."""
    mime = _mime(*paths)
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    actions = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(pos, actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(enter)
    if not enter.isAccepted():
        return False
    event = QDropEvent(pos, actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)
    return event.isAccepted()


def _wait_for_analysis(qtbot, page, samples_at_least: int = 1):
    qtbot.waitUntil(lambda: page.analysis is not None or not page.dataset_panel.error.isHidden(), timeout=60000)
    assert page.dataset_panel.error.isHidden(), page.dataset_panel.error.text()
    assert page.analysis.stats.n_samples >= samples_at_least


def test_dropping_a_dataset_file_fills_the_setup_and_the_preview(window, qtbot, tmp_path):
    from tests.gui.conftest import write_dataset

    page = window.train_page
    window.show_page(2)
    data = write_dataset(tmp_path / "dropped.jsonl", n=20)
    assert drop(window, data)
    assert window.stack.currentIndex() == 0
    assert page.dataset_picker.path() == str(data)
    _wait_for_analysis(qtbot, page, 20)
    a = page.analysis
    assert a.stats.n_samples == 20 and a.train_samples + a.validation_samples == 20
    assert 0 < a.stats.trained_fraction < 1  # prompts are masked, completions trained
    panel = page.dataset_panel
    assert panel.values["Samples"].text().startswith("20 ")
    assert panel.values["Format"].text() == "prompt_completion"
    html = panel.preview.toHtml()
    assert "background-color" in html  # trained tokens highlighted
    assert "->" in panel.preview.toPlainText()
    assert sum(b.count for b in a.stats.histogram) == 20
    assert page.estimate.value("Optimizer steps").startswith(f"{a.total_steps}")
    qtbot.waitUntil(lambda: page.estimate.curve.getData()[0] is not None and len(page.estimate.curve.getData()[0]) > 0, timeout=20000)
    qtbot.waitUntil(lambda: "fits" in page.estimate.value("Peak memory"), timeout=30000)
    assert "of" in page.estimate.value("Trainable parameters") and "per step" in page.estimate.value("Duration")
    page.estimate.set_estimate_error(ValueError("device 'cuda' is not available"))
    assert "No estimate: device 'cuda' is not available" in page.estimate.notes.text()


def test_dropping_a_code_folder_reads_it_as_code(window, qtbot, tmp_path):
    page = window.train_page
    folder = write_code_folder(tmp_path / "src")
    assert drop(window, folder)
    assert page.dataset_picker.path() == str(folder)
    _wait_for_analysis(qtbot, page, 4)
    assert page.dataset_panel.values["Format"].text() == "code"
    assert "def add_0" in page.dataset_panel.preview.toPlainText()


def test_dropping_a_model_folder_selects_the_model(window, qtbot, tiny_model_dir, tmp_path):
    page = window.train_page
    page.model_picker.set_path("")
    assert not page.is_valid
    assert is_model_path(tiny_model_dir) and not is_model_path(tmp_path)
    assert drop(window, tiny_model_dir)
    assert page.model_picker.path() == str(tiny_model_dir)
    qtbot.waitUntil(lambda: "LlamaForCausalLM" in page.model_info.text(), timeout=30000)
    assert "Vocabulary" in page.model_info.text()
    assert "Held as" in page.model_info.text() and "dense floats" in page.model_info.text()
    editor = page.form.editors["training.base_quantization"]  # the card follows how the base is held
    editor.set("int8")
    editor.changed.emit()
    qtbot.waitUntil(lambda: "compact: int8, quantised at load" in page.model_info.text(), timeout=30000)


def test_a_drop_on_a_picker_sets_that_picker(window, qtbot, tmp_path):
    page = window.train_page
    folder = write_code_folder(tmp_path / "code")
    assert drop(page.dataset_picker, folder)
    assert page.dataset_picker.path() == str(folder)


def test_a_broken_dataset_shows_a_readable_error_and_blocks_start(window, qtbot, tmp_path):
    page = window.train_page
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{not json\n')
    assert drop(window, bad)
    qtbot.waitUntil(lambda: not page.dataset_panel.error.isHidden(), timeout=60000)
    text = page.dataset_panel.error.text()
    assert "bad.jsonl" in text and "Traceback" not in text
    assert not page.is_valid and not page.start_button.isEnabled()


def test_non_file_drops_are_refused(window):
    mime = QMimeData()
    mime.setText("just text")
    event = QDragEnterEvent(QPointF(window.rect().center()), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(event)
    assert not event.isAccepted()
