"""Chart buffers, downsampling and smoothing, and the chart panel fed with engine events."""

from __future__ import annotations

import math

import numpy as np
import pytest

from senior_intern.gui.charts import ChartPanel
from senior_intern.gui.series import Series, downsample, smooth, sticky_range, time_extent
from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics
from senior_intern.training.events import Evaluated, Progress, TrainingMetrics


def progress(step: int, loss: float, gpus: tuple = ()) -> Progress:
    """A Progress event at ``step``."""
    hw = HardwareMetrics(cpu_utilization=50.0, ram_used=4, ram_total=8, gpus=gpus)
    metrics = TrainingMetrics(step=step, epoch=1, loss=loss, learning_rate=1e-3 * step, grad_norm=0.5)
    return Progress(epoch=1, total_epochs=1, step_in_epoch=step, steps_per_epoch=100, global_step=step, total_steps=100,
                    samples_processed=step * 4, total_samples=400, tokens_processed=step * 100, trained_tokens_processed=step * 50,
                    elapsed=step * 0.5, eta=10.0, metrics=metrics, hardware=hw)


def test_series_grows_past_its_capacity():
    s = Series(capacity=2)
    for i in range(5):
        s.append(i, None if i == 2 else i * 2)
    assert len(s) == 5
    assert list(s.x) == [0, 1, 2, 3, 4]
    assert math.isnan(s.y[2]) and s.y[4] == 8
    s.clear()
    assert len(s) == 0


def test_downsample_bounds_the_points_and_keeps_spikes():
    x = np.arange(100_000, dtype=float)
    y = np.zeros_like(x)
    y[54_321] = 9.0
    dx, dy = downsample(x, y, max_points=1000)
    assert len(dx) <= 1002
    assert dy.max() == 9.0
    assert np.all(np.diff(dx) >= 0)
    assert dx[-1] == x[-1]
    small_x, small_y = downsample(x[:10], y[:10], max_points=1000)
    assert len(small_x) == 10 and len(small_y) == 10


def test_downsample_with_nans():
    x = np.arange(5000, dtype=float)
    y = np.full_like(x, np.nan)
    y[::7] = 1.0
    dx, dy = downsample(x, y, max_points=100)
    assert len(dx) <= 102


def test_smooth_is_a_debiased_moving_average():
    values = np.array([2.0, 2.0, math.nan, 2.0])
    out = smooth(values, weight=0.9)
    assert out[0] == pytest.approx(2.0) and out[1] == pytest.approx(2.0) and out[3] == pytest.approx(2.0)
    assert math.isnan(out[2])
    noisy = smooth(np.array([0.0, 10.0]), weight=0.5)
    assert noisy[1] == pytest.approx((0.5 * 0.5 * 0 + 0.5 * 10) / (1 - 0.25))


def test_panel_buffers_events_and_draws_on_refresh(qtbot):
    panel = ChartPanel(max_points=50)
    qtbot.addWidget(panel)
    for step in range(1, 201):
        panel.add_progress(progress(step, 3.0 - step / 100))
    panel.add_evaluation(Evaluated(global_step=100, epoch=1, validation_loss=2.0, validation_accuracy=0.4, is_best=True))
    assert panel.point_count("loss") == 200 and panel.drawn_count("loss") == 0  # nothing drawn before the refresh
    panel.refresh()
    assert 0 < panel.drawn_count("loss") <= 52
    assert panel.drawn_count("validation") == 1
    assert panel.point_count("cpu") == 200 and panel.point_count("ram") == 200
    assert panel.gpu_stack.currentWidget() is panel.no_gpu  # no GPU: the label shows instead of the plot


def test_panel_shows_the_gpu_plot_when_a_gpu_reports(qtbot):
    panel = ChartPanel()
    qtbot.addWidget(panel)
    gpu = GpuMetrics(index=0, name="Test GPU", utilization=80.0, memory_used=2, memory_total=4)
    panel.add_progress(progress(1, 1.0, gpus=(gpu,)))
    panel.refresh()
    assert panel.gpu_stack.currentWidget() is panel.plots["gpu"]
    assert panel.point_count("gpu_util") == 1 and panel.series["gpu_mem"].y[0] == 50.0
    panel.clear()
    assert panel.point_count("loss") == 0 and panel.gpu_stack.currentWidget() is panel.no_gpu


def test_panel_history(qtbot):
    panel = ChartPanel()
    qtbot.addWidget(panel)
    panel.set_history([1, 2, 3], [3.0, 2.0, 1.0], [2], [2.5], [1e-3, 1e-3, 5e-4])
    assert panel.drawn_count("loss") == 3 and panel.drawn_count("validation") == 1 and panel.drawn_count("lr") == 3


def test_sticky_range_changes_only_when_the_data_leaves_it():
    first = sticky_range(None, 2.0, 6.0)
    assert first[0] < 2.0 and first[1] > 6.0
    assert sticky_range(first, 2.5, 5.0) is None  # still inside and not much wider: keep
    grown = sticky_range(first, 1.0, 6.0)
    assert grown[0] < 1.0
    assert sticky_range(first, 4.0, 4.2)[1] < first[1]  # the data shrank to far less than the range
    assert sticky_range(first, float("nan"), 1.0) is None
    assert sticky_range(None, 3.0, 3.0) != (3.0, 3.0)


def test_time_extent_doubles():
    assert time_extent(0) == 60 and time_extent(61) == 120 and time_extent(500) == 960


def test_step_charts_span_the_whole_run(qtbot):
    panel = ChartPanel()
    qtbot.addWidget(panel)
    for step in range(1, 11):
        panel.add_progress(progress(step, 3.0 - step / 10))
    panel.refresh()
    x_range, y_range = panel.plots["loss"].getViewBox().viewRange()
    assert x_range[1] >= 100  # total_steps of the run, not the 10 steps so far
    assert y_range[0] <= 2.0 and y_range[1] >= 2.9
    assert panel.plots["system"].getViewBox().viewRange()[0][1] >= 60


def test_charts_follow_a_palette_change(qtbot):
    from PySide6.QtGui import QColor, QPalette

    panel = ChartPanel()
    qtbot.addWidget(panel)
    dark = QPalette(panel.palette())
    dark.setColor(QPalette.ColorRole.Base, QColor("#202124"))
    dark.setColor(QPalette.ColorRole.Text, QColor("#e8eaed"))
    panel.setPalette(dark)
    assert panel.plots["loss"].backgroundBrush().color().name() == "#202124"


def test_a_new_run_starts_from_fresh_axes(qtbot):
    panel = ChartPanel()
    qtbot.addWidget(panel)
    for step in range(1, 201):
        panel.add_progress(progress(step, 30.0 - step / 10))
    panel.refresh()
    (x0, x1), (y0, y1) = panel.plots["loss"].getViewBox().viewRange()
    assert x1 > 150 and y1 > 20
    panel.clear()  # the next run
    (x0, x1), (y0, y1) = panel.plots["loss"].getViewBox().viewRange()
    assert x1 < 5 and y1 <= 1.01
    assert panel.plots["system"].getViewBox().viewRange()[0][1] < 70


def test_resume_history_from_metrics_jsonl(tmp_path):
    import json

    from senior_intern.gui.runs import run_history

    run = tmp_path / "run"
    (run / "checkpoints" / "step-0000004").mkdir(parents=True)
    (run / "checkpoints" / "step-0000004" / "state.json").write_text("{}")
    lines = [{"type": "train", "step": s, "loss": 3.0 - s / 10, "lr": 1e-3, "grad_norm": 0.5} for s in range(1, 7)]
    lines.insert(2, {"type": "eval", "step": 2, "validation_loss": 2.5})
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"type": "train", "st'  # a line cut by a crash
    (run / "metrics.jsonl").write_text(text)
    history = run_history(run)
    assert history.steps == [1, 2, 3, 4] and history.last_step == 4  # later steps are trained again
    assert history.validation_steps == [2] and history.grad_norms == [0.5] * 4
    assert run_history(run / "checkpoints" / "step-0000004").steps == [1, 2, 3, 4]
    assert run_history(tmp_path / "nothing-here") is None
