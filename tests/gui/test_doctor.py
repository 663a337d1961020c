"""The dataset doctor: fresh results on every change, errors against the input at fault, fixes."""

from __future__ import annotations

import json

from PySide6.QtGui import QColor, QPalette

from senior_intern.config import DatasetFormat, TrainingJob
from senior_intern.gui import doctor
from senior_intern.gui.dataset_panel import dimmed_text_color
from senior_intern.data.dataset import DatasetError
from senior_intern.data.sources import Problem
from tests.gui.conftest import write_dataset
from tests.gui.test_drop import drop


def _wait(qtbot, page):
    qtbot.waitUntil(lambda: page.analysis is not None or not page.dataset_panel.error.isHidden()
                    or not page.dataset_panel.note.isHidden(), timeout=60000)


def test_masked_tokens_get_a_real_grey_not_black():
    palette = QPalette()
    palette.setColor(QPalette.ColorRole.Text, QColor("#000000"))
    palette.setColor(QPalette.ColorRole.Base, QColor("#ffffff"))
    assert dimmed_text_color(palette) == "#7f7f7f"
    palette.setColor(QPalette.ColorRole.Text, QColor("#ffffff"))
    palette.setColor(QPalette.ColorRole.Base, QColor("#202020"))
    assert dimmed_text_color(palette) == "#8f8f8f"


def test_diagnosis_in_plain_words_with_fixes():
    job = TrainingJob(dataset_path="/data/qa.jsonl")
    bad = DatasetError("x: 2 problem(s); set skip_malformed (--skip-malformed)",
                       [Problem("/data/qa.jsonl:3", "no 'prompt' key"), Problem("/data/qa.jsonl:9", "malformed JSON")])
    d = doctor.diagnose(bad, job)
    assert d.about == "dataset" and "qa.jsonl: 2 records cannot be used" in d.message
    assert "qa.jsonl:3: no 'prompt' key" in d.message and "--skip-malformed" not in d.message
    assert d.fixes[0].label == "Skip the 2 bad records"
    d.fixes[0].apply(job)
    assert job.data.skip_malformed
    chat = next(f for f in d.fixes if f.format == "chat")
    chat.apply(job)
    assert job.data.format == DatasetFormat.CHAT
    empty = doctor.diagnose(DatasetError("x: the dataset is empty: no text", empty=True), job)
    assert "Choose the format by hand" in empty.message and all(f.format != "chat" for f in empty.fixes)
    model = doctor.diagnose(doctor.ModelUnreadable("fake.gguf: not a GGUF file"), job)
    assert model.about == "model" and not model.fixes


def test_a_bad_line_is_fixed_with_one_click_and_old_results_go(window, qtbot, tmp_path):
    page = window.train_page
    good = write_dataset(tmp_path / "good.jsonl", n=12)
    assert drop(window, good)
    _wait(qtbot, page)
    assert page.analysis is not None and "->" in page.dataset_panel.preview.toPlainText()
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps({"prompt": "def add ->", "completion": " add def"})] * 10 + ["{not json"]
    bad.write_text("\n".join(lines) + "\n")
    assert drop(window, bad)
    _wait(qtbot, page)
    panel = page.dataset_panel
    assert not panel.error.isHidden() and "1 record cannot be used" in panel.error.text()
    assert panel.preview.toPlainText() == "" and panel.values["Samples"].text() == "–"  # nothing stale
    assert "see under Dataset" in page.problems_label.text() and not page.start_button.isEnabled()
    skip = panel.fix_buttons[0]
    assert skip.text() == "Skip the 1 bad record"
    skip.click()
    qtbot.waitUntil(lambda: page.analysis is not None, timeout=60000)
    assert page.analysis is not None and page.analysis.stats.n_samples == 10 and panel.error.isHidden()
    assert page.current_job()[0].data.skip_malformed


def test_a_bad_model_is_reported_on_the_model_not_on_later_datasets(window, qtbot, tmp_path):
    page = window.train_page
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"this is not a gguf file at all")
    assert drop(window, fake)
    assert page.model_picker.path() == str(fake)
    assert drop(window, write_dataset(tmp_path / "later.jsonl", n=8))
    _wait(qtbot, page)
    panel = page.dataset_panel
    assert panel.error.isHidden() and not panel.note.isHidden()
    assert "fake.gguf" not in panel.note.text()
    assert "cannot be read" in page.model_picker.message.text()
    assert not page.start_button.isEnabled()


def test_the_preview_can_be_enlarged(window, qtbot, tmp_path):
    page = window.train_page
    assert drop(window, write_dataset(tmp_path / "d.jsonl", n=6))
    _wait(qtbot, page)
    dialog = page.dataset_panel.enlarge_preview()
    qtbot.addWidget(dialog)
    assert dialog.width() >= 900 and "->" in dialog.findChild(type(page.dataset_panel.preview)).toPlainText()


def _drag_enter(widget, path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDragEnterEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(event)
    return event


def test_binary_drops_are_refused_while_dragging_and_usable_ones_light_the_drop_zones(window, tmp_path):
    page = window.train_page
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    event = _drag_enter(window, png)
    assert not event.isAccepted()
    assert "picture.png is a binary file" in window.statusBar().currentMessage()
    assert not page.dataset_picker.property("dropTarget")
    assert not _drag_enter(page.dataset_picker, png).isAccepted()
    assert "binary file" in page.dataset_picker.message.text()
    data = write_dataset(tmp_path / "ok.jsonl", n=4)
    assert _drag_enter(window, data).isAccepted()
    assert page.dataset_picker.property("dropTarget") and page.model_picker.property("dropTarget")
    assert "dashed" in page.dataset_picker.styleSheet()
    window.dragLeaveEvent(None)
    assert not page.dataset_picker.property("dropTarget") and page.dataset_picker.styleSheet() == ""


def test_question_answer_columns_are_mapped_with_one_click(window, qtbot, tmp_path):
    page = window.train_page
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"Question": f"def add {i} ->", "answer": " add def"}) + "\n" for i in range(10)))
    assert drop(window, qa)
    _wait(qtbot, page)
    panel = page.dataset_panel
    assert "10 records cannot be used" in panel.error.text()
    mapping = panel.fix_buttons[0]
    assert mapping.text() == "Map Question → prompt, answer → completion (prompt / completion)"
    mapping.click()
    qtbot.waitUntil(lambda: page.analysis is not None, timeout=60000)
    assert page.analysis.stats.n_samples == 10 and page.analysis.stats.format == "prompt_completion"
    job = page.current_job()[0]
    assert job.data.column_map == ["Question=prompt", "answer=completion"] and not job.data.skip_malformed
    assert page.form.editors["data.column_map"].get() == ["Question=prompt", "answer=completion"]


def test_no_column_map_is_guessed_when_the_fields_are_ambiguous_or_mixed():
    job = TrainingJob(dataset_path="/data/qa.jsonl")
    two_inputs = [Problem("/data/qa.jsonl:1", "none of the known fields", ("question", "query", "answer"))]
    assert all(not f.column_map for f in doctor.diagnose(DatasetError("x", two_inputs), job).fixes)
    mixed = [Problem("/data/qa.jsonl:1", "none", ("question", "answer")), Problem("/data/qa.jsonl:2", "none", ("content",))]
    assert all(not f.column_map for f in doctor.diagnose(DatasetError("x", mixed), job).fixes)
    body = [Problem("/data/t.jsonl:1", "none of the known fields", ("body", "id"))]
    fix = doctor.diagnose(DatasetError("x", body), job).fixes[0]
    assert fix.column_map == ("body=text",) and fix.label == "Map body → text (text)"


def test_the_dataset_scan_reports_real_progress_to_the_activity_centre(window, qtbot, tmp_path):
    page = window.train_page
    updates = []
    window.tasks.task_updated.connect(lambda info: updates.append((info.name, info.done, info.total)))
    assert drop(window, write_dataset(tmp_path / "scan.jsonl", n=40))
    _wait(qtbot, page)
    scans = [u for u in updates if "dataset scan" in u[0].lower()]
    assert scans and scans[-1][1:] == (40, 40)  # records read, of the file's 40
