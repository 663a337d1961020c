"""The status-bar activity indicator names the background tasks while they run."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QWidget


def test_the_indicator_names_running_tasks_and_goes_idle(window, qtbot):
    indicator = window.findChild(QWidget, "activityIndicator")
    assert indicator is not None and indicator is window.activity
    window.tasks.wait()
    qtbot.waitUntil(lambda: indicator.label.text() == "No background tasks", timeout=30000)
    gate = threading.Event()
    done = []
    window.tasks.submit(gate.wait, 20, on_done=done.append, name="GGUF export")
    window.tasks.submit(gate.wait, 20, name="GGUF export")
    assert indicator.label.text() == "Working: GGUF export ×2" and not indicator.bar.isHidden()
    gate.set()
    qtbot.waitUntil(lambda: indicator.label.text() == "No background tasks", timeout=10000)
    assert done == [True] and indicator.bar.isHidden()


def _counting(gate: threading.Event, total: int, task=None) -> str:
    """Reports a unit, then waits for the test to let it go on; ends early once cancelled."""
    for done in range(total):
        task.progress(done, total)
        gate.wait(5)
        gate.clear()
    return "finished"


def test_progress_eta_and_cancel_in_the_activity_panel(window, qtbot):
    tasks, indicator = window.tasks, window.activity
    window.tasks.wait()
    gate = threading.Event()
    results, cancelled, ended = [], [], []
    tasks.task_ended.connect(lambda info: info.name == "GGUF export" and ended.append(info))
    task_id = tasks.submit(_counting, gate, 10, on_done=results.append, on_error=results.append, on_cancelled=lambda: cancelled.append(1),
                           name="GGUF export", control=True, cancellable=True, notify=True)
    for _ in range(3):
        qtbot.wait(20)
        gate.set()
    qtbot.waitUntil(lambda: tasks.info(task_id) is not None and tasks.info(task_id).done >= 3, timeout=10000)
    info = tasks.info(task_id)
    assert info.eta() is not None and info.eta() > 0
    qtbot.waitUntil(lambda: "left)" in indicator.label.text(), timeout=5000)
    assert indicator.label.text().startswith("Working: GGUF export (") and "%" in indicator.label.text()
    assert indicator.bar.maximum() == 10 and indicator.bar.value() >= 3

    panel = indicator.open_panel()
    assert panel.isVisible() and list(panel.rows) == [task_id]
    row = panel.rows[task_id]
    assert row.bar.maximum() == 10 and "elapsed" in row.detail.text() and "left" in row.detail.text()
    assert row.cancel_button.isVisible() and row.cancel_button.isEnabled()
    row.cancel_button.click()
    assert not row.cancel_button.isEnabled()  # heard: the button says so at once
    gate.set()
    qtbot.waitUntil(lambda: bool(ended), timeout=10000)
    assert ended[0].outcome == "cancelled" and cancelled == [1] and results == []
    qtbot.waitUntil(lambda: not panel.rows, timeout=5000)
    assert "GGUF export was cancelled after" in panel.finished.text()
    notice = window.activity_notice
    assert notice.isVisible() and "was cancelled" in notice.label.text()
    with pytest.raises(KeyError):
        notice.button("Open folder")  # nothing was written
    qtbot.waitUntil(lambda: indicator.label.text() == "No background tasks", timeout=5000)


def test_a_task_that_writes_a_file_ends_with_open_folder_and_copy_path(window, qtbot, tmp_path, monkeypatch):
    out = tmp_path / "exports" / "model.gguf"
    out.parent.mkdir()
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True))

    def write() -> str:
        out.write_bytes(b"GGUF")
        return str(out)

    window.tasks.submit(write, name="Merge", result_path=lambda path: path)
    notice = window.activity_notice
    qtbot.waitUntil(notice.isVisible, timeout=10000)
    assert notice.label.text().startswith("Merge finished in ") and str(out) in notice.label.text()
    notice.button("Copy path").click()
    assert QGuiApplication.clipboard().text() == str(out)
    window.tasks.submit(write, name="Merge", result_path=lambda path: path)
    qtbot.waitUntil(notice.isVisible, timeout=10000)
    notice.button("Open folder").click()
    assert opened == [str(out.parent)]


def test_opening_the_base_model_for_training_is_a_task_with_progress(window, qtbot):
    from senior_intern.training.events import ModelOpening

    window.tasks.wait()
    qtbot.waitUntil(lambda: window.activity.label.text() == "No background tasks", timeout=30000)
    ended = []
    window.tasks.task_ended.connect(ended.append)
    window.runner.opening.emit(ModelOpening(68, 272))
    assert window.tasks.names() == ["Opening the base model"]
    assert window.activity.label.text().startswith("Working: Opening the base model (25%")
    window.runner.opening.emit(ModelOpening(272, 272))
    assert window.tasks.names() == [] and ended[-1].name == "Opening the base model" and ended[-1].outcome == "done"


def test_playground_loading_is_shown_as_a_task(window, qtbot, tiny_model_dir):
    page = window.playground_page
    names, ended = [], []
    window.tasks.tasks_changed.connect(lambda current: names.extend(current))
    window.tasks.task_ended.connect(ended.append)
    page.base.setText(str(tiny_model_dir))
    page.max_tokens.setValue(2)
    page.prompt.setPlainText("hello")
    page.generate_button.click()
    assert "Playground model loading" in window.tasks.names()
    qtbot.waitUntil(lambda: not page.running, timeout=60000)
    loading = [info for info in ended if info.name == "Playground model loading"]
    assert len(loading) == 1 and loading[0].outcome == "done" and loading[0].total >= 1
    page.generate_button.click()  # the model is loaded now: no second loading task
    qtbot.waitUntil(lambda: not page.running, timeout=60000)
    assert len([info for info in ended if info.name == "Playground model loading"]) == 1


def test_cancelling_the_playground_loading_stops_it(window, qtbot, tiny_model_dir):
    page = window.playground_page
    ended = []
    window.tasks.task_ended.connect(lambda info: info.name == "Playground model loading" and ended.append(info))
    page.base.setText(str(tiny_model_dir))
    page.prompt.setPlainText("hello")
    page.generate_button.click()
    loading = next(info for info in window.tasks.running() if info.name == "Playground model loading")
    assert loading.cancellable and window.tasks.cancel(loading.id)
    qtbot.waitUntil(lambda: not page.running, timeout=60000)
    assert ended and ended[0].outcome == "cancelled"
    assert page.outputs["base"].toPlainText() == "" and page.error.isHidden()
    assert page.side_status["base"].text() == "Stopped before it answered."
