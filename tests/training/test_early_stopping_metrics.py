"""EarlyStopping and TrainingMetricsTracker as the spec describes them."""

from __future__ import annotations

import json
import math

import pytest

from senior_intern.training.early_stopping import EarlyStopping, EarlyStoppingMode
from senior_intern.training.events import TrainingMetrics, perplexity
from senior_intern.training.metrics import TrainingMetricsTracker, append_jsonl


def test_early_stopping_min_mode_patience_and_delta() -> None:
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert es.step(1.0) is True and es.best_value == 1.0
    assert es.step(0.95) is False and es.counter == 1  # not better by min_delta
    assert es.step(0.5) is True and es.counter == 0
    assert es.step(0.5) is False and not es.should_stop
    assert es.step(0.6) is False and es.should_stop and es.evaluations_since_improvement == 2


def test_early_stopping_max_mode_nan_and_disabled() -> None:
    es = EarlyStopping(patience=1, min_delta=0.0, mode=EarlyStoppingMode.MAX)
    assert es.step(0.5) and not es.step(0.5) and es.should_stop
    es = EarlyStopping(patience=3)
    assert es.step(math.nan) is False and es.counter == 1
    never = EarlyStopping(patience=0)
    for _ in range(10):
        never.step(1.0)
    assert not never.should_stop


def test_early_stopping_state_round_trip_and_errors() -> None:
    es = EarlyStopping(patience=3)
    es.step(2.0)
    es.step(2.5)
    other = EarlyStopping(patience=3)
    other.load_state_dict(json.loads(json.dumps(es.state_dict())))
    assert (other.counter, other.best_value, other.should_stop) == (1, 2.0, False)
    fresh = EarlyStopping()
    fresh.load_state_dict(EarlyStopping().state_dict())
    assert fresh.best_value == math.inf
    with pytest.raises(ValueError):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError):
        EarlyStopping(min_delta=-1)


def _m(step: int, loss: float, epoch: int = 1, val: float | None = None) -> TrainingMetrics:
    return TrainingMetrics(step=step, epoch=epoch, loss=loss, learning_rate=1e-3, validation_loss=val)


def test_tracker_epochs_best_and_summary() -> None:
    t = TrainingMetricsTracker()
    assert t.summary() is None and t.best_metrics() is None
    for i, loss in enumerate([4.0, 3.0, 2.0, 1.0], start=1):
        t.record(_m(i, loss, epoch=1 if i <= 2 else 2))
    assert t.epoch_average_loss(1) == 3.5 and t.epoch_average_loss(2) == 1.5 and t.epoch_average_loss(9) == 0.0
    t.attach_validation(0.8, 0.5)
    assert t.best_metrics().step == 4 and t.history[-1].validation_accuracy == 0.5
    t.record(_m(5, 10.0))
    s = t.summary()
    assert (s.total_steps, s.final_loss, s.min_loss, s.max_loss, s.best_validation_loss) == (5, 10.0, 1.0, 10.0, 0.8)
    assert s.average_loss == pytest.approx(4.0)


def test_tracker_records_round_trip_and_jsonl(tmp_path) -> None:
    t = TrainingMetricsTracker()
    t.record(_m(1, 2.0, val=1.5))
    other = TrainingMetricsTracker()
    other.load_records(json.loads(t.export_json()))
    assert other.history == t.history and other.total_steps == 1
    t.reset()
    assert t.total_steps == 0
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"loss": math.nan, "step": 1})
    append_jsonl(path, {"loss": 1.0, "step": 2})
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"loss": None, "step": 1}, {"loss": 1.0, "step": 2}]


def test_perplexity_is_capped() -> None:
    assert perplexity(None) is None and math.isnan(perplexity(math.nan))
    assert perplexity(1.0) == pytest.approx(math.e)
    assert perplexity(1000.0) == pytest.approx(math.exp(20))
    assert _m(1, 50.0).perplexity == pytest.approx(math.exp(20))
    assert _m(1, 1.0).validation_perplexity is None
