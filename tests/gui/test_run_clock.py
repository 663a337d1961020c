"""The Run page moves between steps: Elapsed, the running step and the ETA tick with the clock;
pause and cancel say they are pending until the engine acts on them."""

from __future__ import annotations

from types import SimpleNamespace

from senior_intern.gui import run_page as run_page_module
from senior_intern.gui.run_page import RunPage
from senior_intern.gui.worker import TrainingRunner
from senior_intern.training.events import StateChanged, TrainingState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress(step: int, eta: float) -> SimpleNamespace:
    return SimpleNamespace(percent=100 * step / 9, epoch=1, total_epochs=3, global_step=step, total_steps=9, elapsed=30.0,
                           eta=eta, tokens_per_second=120.0, metrics=SimpleNamespace(loss=1.5, learning_rate=1e-4))


class FakeRunner(TrainingRunner):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    @property
    def running(self) -> bool:
        return True

    @property
    def paused(self) -> bool:
        return False

    def pause(self) -> None:
        self.calls.append("pause")

    def cancel(self) -> None:
        self.calls.append("cancel")


def test_elapsed_step_and_eta_tick_between_steps(qtbot, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(run_page_module.time, "monotonic", clock)
    page = RunPage(FakeRunner())
    qtbot.addWidget(page)
    charted = []
    page.charts.add_progress = charted.append  # the charts have their own tests
    page._reset("Training")
    page._on_state(StateChanged(TrainingState.PREPARING, TrainingState.TRAINING, ""))
    clock.now += 12
    page._on_progress(_progress(3, eta=60.0))
    page._refresh_labels()
    assert len(charted) == 1 and page.stats["Elapsed"].text() == "0:12"
    assert page.stats["Step"].text() == "3 / 9 · step 4 running · 0 s" and page.stats["ETA"].text() == "1:00"
    clock.now += 41
    page._refresh_labels()  # no new step: the clock still moves
    assert page.stats["Elapsed"].text() == "0:53"
    assert page.stats["Step"].text().endswith("step 4 running · 41 s")
    assert page.stats["ETA"].text() == "0:19"
    clock.now += 100
    page._refresh_labels()
    assert page.stats["ETA"].text() == "0:00"  # never negative
    page.label_timer.stop()


def test_pause_and_cancel_say_pending_until_they_take_effect(qtbot):
    runner = FakeRunner()
    page = RunPage(runner)
    qtbot.addWidget(page)
    page._reset("Training")
    page.toggle_pause()
    assert runner.calls == ["pause"]
    assert page.pause_button.text() == "Pause pending…" and not page.pause_button.isEnabled()
    page._on_state(StateChanged(TrainingState.TRAINING, TrainingState.PAUSED, "Paused"))
    assert page.pause_button.text() == "Resume" and page.pause_button.isEnabled()
    page.cancel()
    assert page.cancel_button.text() == "Cancel pending…" and "pending" in page.state_label.text()
    assert not page.pause_button.isEnabled()
    page._on_state(StateChanged(TrainingState.PAUSED, TrainingState.TRAINING, ""))
    assert not page.pause_button.isEnabled()  # a cancel is on its way: no pausing meanwhile
    page._finish_ui()
    assert page.cancel_button.text() == "Cancel" and page.stats["ETA"].text() in ("–",)


def test_hardware_charts_tick_every_second_without_steps(qtbot, monkeypatch):
    from senior_intern.gui import charts as charts_module

    monkeypatch.setattr(charts_module, "HARDWARE_TICK_MS", 100)
    page = RunPage(FakeRunner())
    qtbot.addWidget(page)
    page.charts.hardware_timer.setInterval(charts_module.HARDWARE_TICK_MS)
    page._reset("Training")
    qtbot.waitUntil(lambda: page.charts.point_count("cpu") >= 3, timeout=5000)
    assert page.progress_events == 0 and page.charts.point_count("ram") >= 3  # no step yet, the chart moves
    xs = page.charts.series["cpu"].x
    assert (xs[1:] >= xs[:-1]).all()
    page._finish_ui()
    count = page.charts.point_count("cpu")
    qtbot.wait(300)
    assert page.charts.point_count("cpu") == count  # the run ended: no more readings
