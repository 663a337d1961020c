"""A 2-process data-parallel run started from the GUI: the form's control, the worker, the Run page."""

from __future__ import annotations

from pathlib import Path

import psutil
from PySide6.QtWidgets import QLabel

from senior_intern.config import TrainingJob
from senior_intern.training.events import TrainingState, TrainingStatus

RUN_TIMEOUT_MS = 300_000


def _launcher_children() -> list[psutil.Process]:
    """This test process's children that run the CLI (the launcher and its ranks)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "senior_intern.cli" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_result(qtbot, page):
    qtbot.waitUntil(lambda: page.result is not None or not page.summary.isHidden(), timeout=RUN_TIMEOUT_MS)
    return page.result


def test_two_processes_from_the_form_train_to_completion(window, qtbot, tiny_job: TrainingJob):
    page, train = window.run_page, window.train_page
    editor = train.form.editors["training.processes"]
    assert editor.get() == 1 and "Processes / GPUs" in [label.text() for label in train.form.findChildren(QLabel)]
    editor.box.setValue(2)  # as a user would
    qtbot.waitUntil(lambda: train.analysis is not None and not window.tasks.busy, timeout=60000)
    assert train.is_valid, train.problems
    assert train.estimate.values["Global batch"].text() == "8 sequences (4 per process x 2 processes x 1 accumulation)"
    planned = train.analysis.total_steps  # 36 training rows in global batches of 8: 5 steps per epoch
    assert planned == 10
    train.start_button.click()
    assert window.runner.running
    qtbot.waitUntil(lambda: not page.world_label.isHidden(), timeout=RUN_TIMEOUT_MS)
    assert page.world_label.text() == "Data parallel: 2 processes (gloo): rank 0 cpu, rank 1 cpu"
    result = _wait_result(qtbot, page)
    assert result is not None and result.status == TrainingStatus.COMPLETED, page.summary_label.text()
    assert result.total_steps == planned == page.progress_events  # rank 0's events only, each step once
    assert page.charts.point_count("loss") == planned
    assert page.stats["Step"].text() == f"{planned} / {planned}"
    assert "Adapter saved" in page.log_view.toPlainText()
    assert result.adapter_path and (Path(result.adapter_path) / "adapter_model.safetensors").is_file()
    assert not window.runner.running and not _launcher_children()


def test_cancelling_a_two_process_run_ends_it_cancelled_with_a_checkpoint(window, qtbot, tiny_job: TrainingJob):
    page = window.run_page
    tiny_job.training.epochs, tiny_job.training.save_every, tiny_job.training.batch_size = 20, 4, 2
    tiny_job.training.processes = 2
    window.train_page.set_job(tiny_job)
    window.train_page.start()
    qtbot.waitUntil(lambda: page.progress_events >= 2, timeout=RUN_TIMEOUT_MS)
    window.actions_["pause"].trigger()
    qtbot.waitUntil(lambda: page.state == TrainingState.PAUSED, timeout=60000)
    paused_at = page.progress_events
    qtbot.wait(1500)
    assert page.progress_events == paused_at  # every rank holds
    window.actions_["cancel"].trigger()
    result = _wait_result(qtbot, page)
    assert result.status == TrainingStatus.CANCELLED, page.summary_label.text()
    assert result.resume_checkpoint and (Path(result.resume_checkpoint) / "state.json").is_file()
    assert "Cancelled" in page.summary_label.text() and not page.continue_button.isHidden()
    assert not window.runner.running
    qtbot.waitUntil(lambda: not _launcher_children(), timeout=30000)  # the launcher was reaped, no rank left
    # "Resume this run" starts 2 processes again (the run's job says so) and goes on from the checkpoint.
    done_before = result.total_steps
    page.continue_button.click()
    qtbot.waitUntil(lambda: page.progress_events >= 1, timeout=RUN_TIMEOUT_MS)
    assert page.last_progress.global_step > done_before
    assert page.world_label.text() == "Data parallel: 2 processes (gloo): rank 0 cpu, rank 1 cpu"
    window.actions_["cancel"].trigger()
    assert _wait_result(qtbot, page).status == TrainingStatus.CANCELLED
    qtbot.waitUntil(lambda: not _launcher_children(), timeout=30000)
