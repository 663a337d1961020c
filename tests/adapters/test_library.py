"""The adapter library on real adapters made by the engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from senior_intern.adapters.library import AdapterLibrary, check_name
from senior_intern.adapters.store import check_id
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
from tests.conftest import write_dataset, write_tiny_model


class _NotATensor:
    """Anything that needs free unpickling."""


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], Path]:
    """Two adapters trained by the engine on the tiny model, in a library folder."""
    root = tmp_path_factory.mktemp("lib")
    model = write_tiny_model(root / "model")
    data = write_dataset(root / "data.jsonl", n=16)
    ids = []
    for name in ("first", "second"):
        job = TrainingJob(name=name, base_model_path=str(model), dataset_path=str(data), output_dir=str(root / "runs"),
                          adapters_dir=str(root / "library"), validation_split=0.25)
        t = job.training
        t.epochs, t.max_seq_length, t.warmup_steps, t.device, t.dtype, t.packing = 1, 64, 0, "cpu", "float32", False
        t.eval_every = t.save_every = 0
        job.lora.rank, job.lora.alpha = 4, 8.0
        result = Trainer().run(job)
        assert result.success, result.error_message
        ids.append(result.adapter_id)
    return root / "library", ids, model


@pytest.fixture
def library(made, tmp_path: Path) -> AdapterLibrary:
    root, _, _ = made
    copy = tmp_path / "library"
    shutil.copytree(root, copy)
    return AdapterLibrary(copy)


def test_list_newest_first_with_metadata(library: AdapterLibrary, made) -> None:
    _, ids, model = made
    infos = library.list()
    assert [i.id for i in infos] == [ids[1], ids[0]] or {i.id for i in infos} == set(ids)
    second = library.get(ids[1])
    assert second.name == "second" and second.rank == 4 and second.alpha == 8.0 and not second.damaged
    assert second.base_model == str(model) and len(second.base_model_hash) >= 16
    assert second.final_loss is not None and second.best_validation_loss is not None
    assert second.size_bytes > 0 and "q_proj" in second.target_modules
    meta = library.metadata(ids[1])
    assert meta["history"]["loss"] and meta["training_config"]["epochs"] == 1


def test_load_checks_rank(library: AdapterLibrary, made) -> None:
    _, ids, _ = made
    info, config, weights = library.load(ids[0])
    assert config["r"] == 4 and all(t.shape[0] == 4 for k, t in weights.items() if ".lora_A" in k)
    config_path = info.path / "adapter_config.json"
    config["r"] = 8
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has rank 4, the config says 8"):
        library.load(ids[0])


def test_rename_describe_delete(library: AdapterLibrary, made) -> None:
    _, ids, _ = made
    assert library.rename(ids[0], "  Better name ").name == "Better name"
    assert library.set_description(ids[0], "Trained on tiny data").description == "Trained on tiny data"
    assert library.get(ids[0]).name == "Better name"
    sibling = library.root.parent / "outside"
    sibling.mkdir()
    library.delete(ids[0])
    assert not (library.root / ids[0]).exists() and (library.root / ids[1]).is_dir() and sibling.is_dir()
    with pytest.raises(FileNotFoundError, match="No adapter with id"):
        library.get(ids[0])


@pytest.mark.parametrize("bad", ["../evil", "..", "/etc", "a/b", "a\\b", "", ".hidden", "x" * 200])
def test_path_traversal_ids_are_refused(library: AdapterLibrary, bad: str) -> None:
    with pytest.raises(ValueError, match="Invalid adapter id"):
        library.delete(bad)
    with pytest.raises(ValueError):
        check_id(bad)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "", "   ", "two\nlines"])
def test_bad_names_are_refused(library: AdapterLibrary, made, bad: str) -> None:
    _, ids, _ = made
    with pytest.raises(ValueError):
        library.rename(ids[1], bad)
    with pytest.raises(ValueError):
        check_name(bad)


def test_damaged_entries_are_listed_with_their_reason(library: AdapterLibrary, made) -> None:
    _, ids, _ = made
    (library.root / "not-an-adapter").mkdir()
    (library.root / "not-an-adapter" / "notes.txt").write_text("hi")
    broken = library.root / ids[0]
    (broken / "adapter_config.json").write_text("{broken")
    truncated = library.root / "truncated"
    shutil.copytree(library.root / ids[1], truncated)
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[:40])
    infos = {i.id: i for i in library.list()}
    assert "adapter_config.json is missing" in infos["not-an-adapter"].damaged
    assert "adapter_config.json is not valid JSON" in infos[ids[0]].damaged
    assert "unreadable" in infos["truncated"].damaged
    assert infos[ids[1]].damaged is None
    with pytest.raises(ValueError, match="damaged"):
        library.load(ids[0])
    with pytest.raises(ValueError, match="damaged"):
        library.rename(ids[0], "x")


def test_import_peft_folder_and_pickled_bin(library: AdapterLibrary, made, tmp_path: Path) -> None:
    _, ids, _ = made
    source = tmp_path / "from-elsewhere"
    source.mkdir()
    shutil.copy(library.root / ids[1] / "adapter_config.json", source)
    shutil.copy(library.root / ids[1] / "adapter_model.safetensors", source)
    info = library.import_(source)
    assert info.imported and info.name == "from-elsewhere" and info.rank == 4 and not info.damaged
    # Only a pickled adapter_model.bin: read with weights_only and converted.
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(source / "adapter_config.json", pickled)
    torch.save(load_file(str(source / "adapter_model.safetensors")), pickled / "adapter_model.bin")
    converted = library.import_(pickled, name="Converted")
    assert converted.name == "Converted" and (converted.path / "adapter_model.safetensors").is_file()
    assert not (converted.path / "adapter_model.bin").exists()
    # A .bin that needs free unpickling is refused.
    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(source / "adapter_config.json", evil)
    torch.save({"x": _NotATensor()}, evil / "adapter_model.bin")
    with pytest.raises(ValueError, match="refused"):
        library.import_(evil)
    with pytest.raises(ValueError, match="adapter_config.json is missing"):
        library.import_(tmp_path)
    with pytest.raises(FileNotFoundError):
        library.import_(tmp_path / "none")
    assert not [p for p in library.root.iterdir() if p.name.startswith(".tmp")]


def test_export_copies_the_folder(library: AdapterLibrary, made, tmp_path: Path) -> None:
    _, ids, _ = made
    dest = library.export(ids[1], tmp_path / "exported")
    assert (dest / "adapter_model.safetensors").is_file()
    with pytest.raises(FileExistsError):
        library.export(ids[1], dest)


def test_attach_adapter_warns_on_other_base_and_errors_on_shapes(library: AdapterLibrary, made) -> None:
    from senior_intern.adapters.generate import attach_adapter
    from tests.conftest import make_tiny_llama

    _, ids, _ = made
    path = library.get(ids[1]).path
    with pytest.warns(UserWarning, match="different base model"):
        lora = attach_adapter(make_tiny_llama(seed=1), path, base_hash="0" * 64)
    assert lora.lora_state_dict().keys() == load_file(str(path / "adapter_model.safetensors")).keys()
    with pytest.raises(ValueError, match="lora_"):
        attach_adapter(make_tiny_llama(hidden_size=32, intermediate_size=64), path)
    weights = load_file(str(path / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items()}, str(path / "adapter_model.safetensors"))
