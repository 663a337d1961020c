"""Real training runs started from the GUI on the tiny model: progress, charts, control, outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QTimer

from senior_intern.config import TrainingJob
from senior_intern.training.events import TrainingState, TrainingStatus

RUN_TIMEOUT_MS = 120_000


class StallMeter:
    """A 10 ms timer in the GUI thread; the longest gap between its ticks is the worst stall."""

    def __init__(self) -> None:
        self.clock = QElapsedTimer()
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = 0
        self.longest = 0
        self.ticks = 0

    def _tick(self) -> None:
        now = self.clock.elapsed()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        self.ticks += 1

    def start(self) -> None:
        self.clock.start()
        self.last = 0
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


class SchedulingProbe:
    """Another process that sleeps 10 ms at a time and records how late it wakes up.

    Its delays come from the machine (other processes on the cores), not from this app; the
    stall allowed to the GUI is 100 ms plus the worst delay the probe saw at the same time.
    """

    CODE = (
        "import select, sys, time\n"
        "worst, last = 0.0, time.perf_counter()\n"
        "while not select.select([sys.stdin], [], [], 0.01)[0]:\n"
        "    now = time.perf_counter(); worst = max(worst, now - last - 0.01); last = now\n"
        "print(round(worst * 1000))\n"
    )

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def worst_ms(self) -> int:
        """Stop the probe and return its worst wake-up delay in ms."""
        out, _ = self.proc.communicate("", timeout=30)
        return int(out.strip() or 0)


def _wait_result(qtbot, page):
    qtbot.waitUntil(lambda: page.result is not None or not page.summary.isHidden(), timeout=RUN_TIMEOUT_MS)
    return page.result


def test_a_short_run_from_the_gui(window, qtbot, tiny_job: TrainingJob):
    page = window.run_page
    assert window.train_page.is_valid
    # As a user would, look at the dataset analysis first (it also runs on a background thread).
    qtbot.waitUntil(lambda: window.train_page.analysis is not None and not window.tasks.busy, timeout=60000)
    meter = StallMeter()  # measures while training: from the Training state to the result
    probe = SchedulingProbe()
    window.runner.state_changed.connect(lambda e: e.new == TrainingState.TRAINING and not meter.timer.isActive() and meter.start())
    # "While training": up to the run's terminal state; the engine's teardown (freeing memory) comes after.
    done = (TrainingState.COMPLETED, TrainingState.FAILED, TrainingState.CANCELLED)
    window.runner.state_changed.connect(lambda e: e.new in done and meter.stop())
    window.runner.finished.connect(lambda _: meter.stop())
    window.train_page.start_button.click()
    assert window.stack.currentIndex() == 1
    assert window.runner.running and window.actions_["cancel"].isEnabled() and not window.train_page.start_button.isEnabled()
    result = _wait_result(qtbot, page)
    machine_delay = probe.worst_ms()
    assert result is not None and result.status == TrainingStatus.COMPLETED, page.summary_label.text()
    # Charts got every step; the progress bar and labels followed.
    assert page.charts.point_count("loss") == result.total_steps == page.progress_events
    qtbot.waitUntil(lambda: not page.charts.timer.isActive(), timeout=5000)  # the last draws are staggered too
    assert page.charts.drawn_count("loss") == result.total_steps
    assert page.charts.point_count("validation") >= 1 and page.charts.point_count("lr") == result.total_steps
    assert page.progress_bar.value() == 1000
    assert page.stats["Step"].text() == f"{result.total_steps} / {result.total_steps}"
    assert "Completed" in page.summary_label.text() and not page.library_button.isHidden()
    assert "Adapter saved" in page.log_view.toPlainText()
    assert not window.runner.running and window.train_page.start_button.isEnabled()
    # The GUI thread stayed responsive during training.
    assert meter.ticks > 10
    print(f"longest event-loop stall while training: {meter.longest} ms (machine delays meanwhile: {machine_delay} ms)")
    assert meter.longest < 100 + machine_delay, f"the event loop stalled for {meter.longest} ms (machine delays: {machine_delay} ms)"
    # Completion shows the adapter in the library.
    library = window.adapters_page
    qtbot.waitUntil(lambda: any(a.id == result.adapter_id for a in library.adapters), timeout=30000)
    page.library_button.click()
    assert window.stack.currentIndex() == 2 and library.selected_id() == result.adapter_id
    assert Path(library.root) == Path(tiny_job.adapters_dir)
    qtbot.waitUntil(lambda: library.curve.drawn_count("loss") == result.total_steps, timeout=10000)


def test_pause_resume_and_cancel(window, qtbot, tiny_job: TrainingJob):
    page = window.run_page
    tiny_job.training.epochs = 20
    tiny_job.training.save_every = 4
    window.train_page.set_job(tiny_job)
    window.train_page.start()
    qtbot.waitUntil(lambda: page.progress_events >= 2, timeout=RUN_TIMEOUT_MS)
    window.actions_["pause"].trigger()
    qtbot.waitUntil(lambda: page.state == TrainingState.PAUSED, timeout=30000)
    assert page.pause_button.text() == "Resume"
    paused_at = page.progress_events
    qtbot.wait(1000)
    assert page.progress_events == paused_at  # no progress while paused
    page.pause_button.click()
    qtbot.waitUntil(lambda: page.progress_events > paused_at + 1, timeout=30000)
    assert page.pause_button.text() == "Pause"
    window.actions_["cancel"].trigger()
    result = _wait_result(qtbot, page)
    assert result.status == TrainingStatus.CANCELLED
    assert result.resume_checkpoint and Path(result.resume_checkpoint).is_dir()
    assert "Cancelled" in page.summary_label.text() and not page.continue_button.isHidden()
    assert page.library_button.isHidden()
    # One duration: "Cancelled after X" is the Elapsed label, and no stale ETA stays
    elapsed = page.stats["Elapsed"].text()
    assert f"after {elapsed}," in page.summary_label.text() and page.stats["ETA"].text() == "–"
    # Resuming continues from the checkpoint and finishes with an adapter.
    done_before = result.total_steps
    tiny_job.training.epochs = 20
    page.continue_button.click()
    # the charts show the run's history at once, before the first new step
    checkpoint_step = int(Path(result.resume_checkpoint).name.removeprefix("step-"))
    assert page.charts.point_count("loss") == checkpoint_step and page.progress_events == 0
    assert page.stats["Step"].text() == f"{checkpoint_step} (from the checkpoint)"
    qtbot.waitUntil(lambda: page.state == TrainingState.TRAINING, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: page.progress_events >= 1, timeout=RUN_TIMEOUT_MS)
    assert page.last_progress.global_step > done_before
    steps = page.charts.series["loss"].x
    assert (steps[1:] > steps[:-1]).all()  # the new steps continue the restored curve
    window.actions_["cancel"].trigger()
    assert _wait_result(qtbot, page).status == TrainingStatus.CANCELLED


def test_a_failing_run_shows_a_readable_message(window, qtbot, tiny_job: TrainingJob, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    (broken / "tokenizer.json").write_text("{}")
    tiny_job.base_model_path = str(broken)
    page = window.run_page
    page.start_job(tiny_job)
    result = _wait_result(qtbot, page)
    assert result.status == TrainingStatus.FAILED
    text = page.summary_label.text()
    assert "Failed" in text and "broken-model" in text and "Traceback" not in text
    assert page.state == TrainingState.FAILED


def test_resuming_from_a_folder_without_checkpoints_explains_why(window, qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path)))
    window.actions_["resume_checkpoint"].trigger()
    page = window.run_page
    qtbot.waitUntil(lambda: not page.summary.isHidden(), timeout=RUN_TIMEOUT_MS)
    assert page.result is None
    assert "could not start" in page.summary_label.text() and "No usable checkpoint" in page.summary_label.text()
    assert not window.runner.running


def test_closing_during_a_run_asks_then_cancels_it(window, qtbot, tiny_job: TrainingJob, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    tiny_job.training.epochs = 20
    window.train_page.set_job(tiny_job)
    window.train_page.start()
    qtbot.waitUntil(lambda: window.run_page.progress_events >= 1, timeout=RUN_TIMEOUT_MS)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.No))
    window.close()
    assert window.isVisible() and window.runner.running
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    window.close()
    assert not window.isVisible() and not window.runner.running
    run_dirs = list(Path(tiny_job.output_dir).iterdir())
    assert run_dirs and any((d / "checkpoints").glob("step-*") for d in run_dirs)  # cancelling saved a checkpoint
