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



# --- checkpoints that only look complete, and full disks ---------------------------------------

def _save(manager, name: str, step: int, tiny_job: TrainingJob):
    import torch

    return manager.save(name, lora_state={"a": torch.ones(4, 4) * step}, trainer_state={"step": torch.tensor(step)},
                        state={"global_step": step, "epoch": 0, "loader": {}}, job=tiny_job)


@pytest.mark.parametrize("damage", ["truncate trainer_state.pt", "empty job.toml"])
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path: Path, tiny_job: TrainingJob, damage) -> None:
    from senior_intern.training import checkpoint as ckpt

    manager = ckpt.CheckpointManager(tmp_path / "run" / "checkpoints")
    _save(manager, ckpt.step_name(2), 2, tiny_job)
    newest = Path(_save(manager, ckpt.step_name(4), 4, tiny_job).path)
    if damage.startswith("truncate"):
        data = (newest / "trainer_state.pt").read_bytes()
        (newest / "trainer_state.pt").write_bytes(data[: len(data) // 2])
    else:
        (newest / "job.toml").write_text("")
    heard: list[str] = []
    found = ckpt.find_resumable(tmp_path / "run", notify=heard.append)
    assert found.name == "step-0000002"
    assert len(heard) == 1 and "step-0000004 is damaged" in heard[0] and "newest intact checkpoint, step-0000002" in heard[0]
    assert ckpt.load(found).global_step == 2


def test_full_disk_before_a_save_is_a_readable_error(tmp_path: Path, tiny_job: TrainingJob, monkeypatch) -> None:
    import shutil as sh

    from senior_intern.training import checkpoint as ckpt

    manager = ckpt.CheckpointManager(tmp_path / "checkpoints")
    _save(manager, ckpt.step_name(2), 2, tiny_job)
    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ckpt.NoSpaceError, match=r"No space left on .*checkpoints: a checkpoint needs ~.* MB, 0.0 MB free"):
        _save(manager, ckpt.step_name(4), 4, tiny_job)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000002"]


def test_disk_filling_during_a_save_removes_the_partial_folder(tmp_path: Path, tiny_job: TrainingJob, monkeypatch) -> None:
    from senior_intern.training import checkpoint as ckpt

    manager = ckpt.CheckpointManager(tmp_path / "checkpoints")
    _save(manager, ckpt.step_name(2), 2, tiny_job)

    def short_write(obj, f, *a, **kw):  # what torch.save says when the disk fills
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt.torch, "save", short_write)
    with pytest.raises(ckpt.NoSpaceError, match="No space left on"):
        _save(manager, ckpt.step_name(4), 4, tiny_job)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000002"]
    assert ckpt.CheckpointManager(tmp_path / "checkpoints").latest().name == "step-0000002"


def test_huge_record_is_tokenised_only_as_far_as_max_seq_length(tiny_tokenizer) -> None:
    from senior_intern.data.tokenize import MAX_CHARS_PER_TOKEN, Encoder

    seen: list[int] = []

    class Counting:  # the tiny tokenizer, recording how much text it was asked to tokenise
        eos_token_id = tiny_tokenizer.eos_token_id

        def __getattr__(self, name):
            return getattr(tiny_tokenizer, name)

        def __call__(self, text, **kw):
            seen.append(len(text))
            return tiny_tokenizer(text, **kw)

    encoder = Encoder(Counting(), max_seq_length=64)
    huge = "def f(x):\n    return x\n" * 200_000  # ~4.6 MB in one record
    small_sample, small_cut = encoder.encode([("prompt ", False), ("def f(x): return x", True)], "a.jsonl:1")
    seen.clear()
    sample, truncated = encoder.encode([("prompt ", False), (huge, True), ("tail", True)], "a.jsonl:2")
    assert truncated and len(sample.input_ids) == 64 and not small_cut
    assert max(seen) <= 65 * MAX_CHARS_PER_TOKEN  # never the whole 4.6 MB
    full, _ = Encoder(tiny_tokenizer, 64).encode([("prompt ", False), (huge[:20000], True)], "a.jsonl:2")
    assert sample.input_ids == full.input_ids and sample.labels == full.labels  # same tokens as tokenising it all


class _Gadget:  # a pickled object that free unpickling would construct
    pass


def test_pickle_refusal_does_not_repeat_torchs_advice(tmp_path: Path) -> None:
    import torch

    from senior_intern.adapters.library import _convert_bin

    torch.save({"x": _Gadget()}, tmp_path / "adapter_model.bin")
    with pytest.raises(ValueError, match="refused") as info:
        _convert_bin(tmp_path / "adapter_model.bin", tmp_path / "out.safetensors")
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_list_prints_escape_sequences_in_names_harmlessly() -> None:
    from senior_intern.cli.adapters_cmd import printable

    assert printable("evil\x1b[2J\x07name") == "evil\\x1b[2J\\x07name"
    assert printable("plain name é") == "plain name é"
