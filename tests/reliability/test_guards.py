"""Config values, exports and run folders that must be refused before they cost work (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from senior_intern.config import ConfigError, TrainingJob
from senior_intern.training.events import TrainingMetrics
from senior_intern.training.metrics import divergence
from senior_intern.training.runlock import RunFinishedError, RunInUseError, RunLock, mark_finished, refuse_if_finished
from tests.adapters.conftest import tiny_base_dir  # noqa: F401  (fixture)


@pytest.mark.parametrize("section,name", [("lora", "alpha"), ("training", "learning_rate"), ("training", "max_grad_norm")])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
def test_non_finite_values_are_errors_naming_the_field(tiny_job: TrainingJob, section, name, value) -> None:
    setattr(getattr(tiny_job, section), name, value)
    errors = tiny_job.validate().errors
    assert any(str(e).startswith(f"{section}.{name} must be a finite number") for e in errors), errors


def test_job_file_with_nan_is_refused_with_its_key(tmp_path: Path, tiny_job: TrainingJob) -> None:
    path = tiny_job.save(tmp_path / "job.toml")
    path.write_text(path.read_text().replace("learning_rate = 0.005", "learning_rate = nan"))
    with pytest.raises(ConfigError, match=r"training\.learning_rate: expected a finite number"):
        TrainingJob.load(path)


def _history(losses: list[float]) -> list[TrainingMetrics]:
    return [TrainingMetrics(step=i + 1, epoch=0, loss=x, learning_rate=1e-3) for i, x in enumerate(losses)]


def test_divergence_rule() -> None:
    assert divergence(_history([1.3, 1.2, 1.1, 1.0, 0.9, 0.9, 0.8, 0.8])) is None
    assert divergence(_history([0.05, 0.2, 0.3, 0.4])) is None  # small wobble under the margin
    assert "rose from 1.3000" in divergence(_history([1.3, 5.0, 20.0, 37.0]))
    assert "nan" in divergence(_history([1.3, 1.2, float("nan")]))
    assert divergence(_history([])) is None


def test_second_lock_on_a_run_names_the_holder(tmp_path: Path) -> None:
    import os

    first = RunLock.acquire(tmp_path)
    with pytest.raises(RunInUseError, match=f"in use by pid {os.getpid()}"):
        RunLock.acquire(tmp_path)
    first.release()
    again = RunLock.acquire(tmp_path)  # released: free again
    assert again.held
    again.release()


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = f"from senior_intern.training.runlock import RunLock; RunLock.acquire({str(tmp_path)!r}); import os; os._exit(9)"
    subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).resolve().parents[2])
    assert (tmp_path / ".lock").exists()
    RunLock.acquire(tmp_path).release()


def test_finished_run_is_refused(tmp_path: Path) -> None:
    refuse_if_finished(tmp_path)  # not finished: nothing raised
    mark_finished(tmp_path, "abc123", "/lib/abc123", "Completed")
    with pytest.raises(RunFinishedError, match="already finished .*abc123"):
        refuse_if_finished(tmp_path)


def test_export_gguf_never_overwrites_without_force(tmp_path: Path, tiny_base_dir: Path) -> None:
    from senior_intern.adapters.gguf import export_gguf
    from tests.adapters.conftest import save_peft_adapter
    from tests.conftest import make_tiny_llama

    folder = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), folder)
    out = tmp_path / "existing.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--force"):
        export_gguf(folder, tiny_base_dir, out)
    assert out.read_bytes() == b"precious"
    export_gguf(folder, tiny_base_dir, out, overwrite=True)
    assert out.read_bytes()[:4] == b"GGUF"
    weights = tiny_base_dir / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(ValueError, match="is the base model"):
        export_gguf(folder, tiny_base_dir, weights, overwrite=True)
    assert weights.read_bytes() == before

