"""Issue 13's smaller defects: data errors before the model load, UTF-16 files, stale temporary
adapter folders, a twin adapter after a kill in the final save, and imports that fit no base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from senior_intern.adapters.library import AdapterLibrary
from senior_intern.config import TrainingJob
from senior_intern.data import DatasetError, check_dataset, load_dataset
from senior_intern.training import session as session_module
from senior_intern.training.engine import Trainer
from senior_intern.training.events import TrainingStatus
from tests.adapters.conftest import save_peft_adapter, tiny_base_dir  # noqa: F401 (a fixture)
from tests.conftest import make_tiny_llama


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE"), ("utf-32", "UTF-32 LE")])
def test_a_utf16_file_is_named_once_not_as_a_bad_byte_per_line(tmp_path: Path, tiny_tokenizer, encoding, name) -> None:
    path = tmp_path / "data.jsonl"
    lines = "".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) + "\n" for i in range(20))
    path.write_bytes(lines.encode(encoding))
    with pytest.raises(DatasetError) as err:
        load_dataset(path, tiny_tokenizer)
    assert len(err.value.problems) == 1
    message = err.value.problems[0].message
    assert f"the file is {name} text, not UTF-8" in message and "save it with UTF-8 encoding" in message
    assert "not valid UTF-8" not in str(err.value)


def test_check_dataset_finds_record_errors_without_a_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"question": "q", "answer": "a"}\n{broken\n', encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        check_dataset(path)
    assert sorted(p.source for p in err.value.problems) == ["data.jsonl:2", "data.jsonl:3"]
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    check_dataset(good)  # no error
    with pytest.raises(FileNotFoundError, match="Dataset not found"):
        check_dataset(tmp_path / "missing.jsonl")


def test_a_broken_dataset_fails_before_the_model_is_loaded(tiny_job: TrainingJob, monkeypatch) -> None:
    Path(tiny_job.dataset_path).write_text('{"prompt": "a", "completion": "b"}\n{"oops": 1}\n', encoding="utf-8")
    loaded = []
    monkeypatch.setattr(session_module, "load_base_model", lambda *a, **kw: loaded.append(a) or pytest.fail("model loaded"))
    result = Trainer().run(tiny_job)
    assert result.status is TrainingStatus.FAILED
    assert "data.jsonl:2" in result.error_message and "record has none of the known fields" in result.error_message
    assert loaded == []


def test_stale_temporary_adapter_folders_are_removed_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_old = root / ".tmp-old-1234abcd"  # an older version's name, without a pid
    stale_killed = root / f".tmp-killed-1234abcd.{dead.pid}"
    live = root / f".tmp-writing-1234abcd.{os.getpid()}"
    for folder in (stale_old, stale_killed, live):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"partial")
    AdapterLibrary(root)
    assert not stale_old.exists() and not stale_killed.exists()
    assert live.exists()


def test_resume_after_a_kill_between_adapter_save_and_finish_adds_no_twin(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 4
    first = Trainer().run(tiny_job)
    assert first.status is TrainingStatus.COMPLETED
    (Path(first.run_dir) / "finished.json").unlink()  # as if killed right after the adapter's rename
    again = Trainer().resume(first.run_dir)
    assert again.status is TrainingStatus.COMPLETED
    assert again.adapter_id == first.adapter_id
    assert [p.name for p in Path(tiny_job.adapters_dir).iterdir() if not p.name.startswith(".")] == [first.adapter_id]


def test_import_with_a_base_refuses_an_adapter_for_another_model(tmp_path: Path, tiny_base_dir: Path) -> None:
    other = tmp_path / "other-adapter"
    save_peft_adapter(make_tiny_llama(hidden_size=32, intermediate_size=64), other)
    lib = AdapterLibrary(tmp_path / "lib")
    with pytest.raises(ValueError, match="does not fit the base model") as err:
        lib.import_(other, base=tiny_base_dir)
    assert "(28 tensor(s))" in str(err.value) and "mlp.up_proj.lora_A.weight: size 32, the base's model.layers.0.mlp.up_proj needs 64" in str(err.value)
    assert lib.list() == [] and not any(lib.root.iterdir())  # nothing half-imported is left
    fits = tmp_path / "fitting-adapter"
    save_peft_adapter(make_tiny_llama(), fits)
    info = lib.import_(fits, base=tiny_base_dir)
    assert info.damaged is None and info.base_model == str(tiny_base_dir)


def test_cli_import_base_names_a_missing_base(tmp_path: Path) -> None:
    from senior_intern.cli import main

    adapter = tmp_path / "a"
    save_peft_adapter(make_tiny_llama(), adapter)
    code = main(["adapters", "--library", str(tmp_path / "lib"), "import", str(adapter), "--base", str(tmp_path / "nope")])
    assert code == 2


def test_resume_before_the_first_checkpoint_says_how_to_start_again(tmp_path: Path, tiny_job: TrainingJob) -> None:
    from senior_intern.training import checkpoint as ckpt

    run = tmp_path / "runs" / "tiny"
    tiny_job.save(run / "job.toml")
    (run / "metrics.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ckpt.CheckpointError, match="stopped before its first save") as err:
        ckpt.find_resumable(run)
    assert f"senior-intern train --config {run / 'job.toml'}" in str(err.value)
