"""Adapters on disk: the PEFT layout plus our metadata, saved atomically.

An adapter is a folder ``<library>/<id>/`` with

- ``adapter_config.json``        PEFT's config (peft_type LORA, r, lora_alpha, target_modules, ...)
- ``adapter_model.safetensors``  weights with PEFT key names
- ``senior_intern.json``         id, name, description, created, base model hash and path, rank,
                                 alpha, target modules, final and best metrics, both configs,
                                 tags, the run's loss curve, format version

so PEFT, transformers and vLLM load it as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from senior_intern import layout
from senior_intern.config import TrainingJob
from senior_intern.layout import write_text_atomic

FORMAT_VERSION = 1
METADATA_FILE = layout.ADAPTER_METADATA_FILE
CONFIG_FILE = layout.ADAPTER_CONFIG_FILE
WEIGHTS_FILE = layout.ADAPTER_WEIGHTS_FILE
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SavedAdapter:
    """Where an adapter was saved."""

    id: str
    path: Path


def slugify(name: str) -> str:
    """A folder-safe form of a name: lower case letters, digits and dashes (``adapter`` if empty)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48]
    return slug or "adapter"


def check_id(adapter_id: str) -> str:
    """Refuse ids that could reach outside the library (``..``, separators, absolute paths)."""
    if not isinstance(adapter_id, str) or not _ID_RE.match(adapter_id) or ".." in adapter_id:
        raise ValueError(f"Invalid adapter id {adapter_id!r}: use letters, digits, '.', '_' and '-' only, no path separators")
    return adapter_id


def new_adapter_id(name: str) -> str:
    """``<slug of name>-<8 hex>``: readable and unique."""
    return f"{slugify(name)}-{secrets.token_hex(4)}"


TEMP_PREFIX = ".tmp-"


def temp_folder(root: Path, adapter_id: str) -> Path:
    """A new adapter is written in ``<root>/.tmp-<id>.<pid>`` and renamed into place; the pid lets a
    later process tell a folder left by a killed writer from one still being written."""
    return root / f"{TEMP_PREFIX}{adapter_id}.{os.getpid()}"


def remove_stale_temp_folders(root: Path) -> list[Path]:
    """Remove the temporary adapter folders whose writer is gone (killed mid-save); the removed paths.

    A name without a pid (older versions) counts as stale. Folders of a live process stay."""
    import psutil

    removed = []
    for path in root.glob(f"{TEMP_PREFIX}*") if root.is_dir() else ():
        pid = path.name.rpartition(".")[2]
        if path.is_dir() and not (pid.isdigit() and psutil.pid_exists(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def saved_by_run(root: Path, job: TrainingJob, run_dir: str | Path | None, step: int | None) -> SavedAdapter | None:
    """The adapter already in the library from this run at this step, if there is one.

    A run killed after its adapter was renamed into place but before it was marked finished
    resumes to the same last step; its save then finds this adapter instead of adding a twin."""
    if run_dir is None or step is None or not root.is_dir():
        return None
    for path in root.iterdir():
        meta_file = path / layout.ADAPTER_METADATA_FILE
        if path.name.startswith(".") or not meta_file.is_file():
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        final = meta.get("final_metrics")
        if (meta.get("run_dir") == str(run_dir) and meta.get("job_id") == job.id
                and isinstance(final, dict) and final.get("step") == step):
            return SavedAdapter(path.name, path)
    return None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/Inf become None, enums their values, dataclasses dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _clean(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):
        return value.value
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    write_text_atomic(path, json.dumps(_clean(data), indent=2))


def save_adapter(
    library_root: str | Path,
    *,
    lora,
    job: TrainingJob,
    model_info,
    history: list,
    final_validation_loss: float | None = None,
    run_dir: str | Path | None = None,
) -> SavedAdapter:
    """Save the LoRA weights of ``lora`` (a ``LoraModel``) as a new adapter in the library.

    Written into a temporary folder and renamed into place: a crash leaves no half adapter.
    """
    from senior_intern.lora import peft_adapter_config

    root = Path(library_root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_folders(root)
    existing = saved_by_run(root, job, run_dir, history[-1].step if history else None)
    if existing is not None:
        return existing
    adapter_id = new_adapter_id(job.name)
    final = root / adapter_id
    tmp = temp_folder(root, adapter_id)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in lora.lora_state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        targets = sorted({name.rsplit(".", 1)[-1] for name in lora.lora_layers()})
        base_ref = str(model_info.path)
        write_json(tmp / CONFIG_FILE, peft_adapter_config(job.lora, base_ref, targets))
        final_m = history[-1] if history else None
        evaluated = [m for m in history if m.validation_loss is not None]
        best_m = min(evaluated, key=lambda m: m.validation_loss) if evaluated else None
        meta = {
            "format_version": FORMAT_VERSION,
            "id": adapter_id,
            "name": job.name,
            "description": job.description,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base_model": {
                "path": base_ref,
                "hash": model_info.content_hash,
                "architecture": model_info.architecture,
                "model_type": getattr(model_info, "model_type", None),
            },
            "rank": job.lora.rank,
            "alpha": job.lora.alpha,
            "target_modules": targets,
            "final_metrics": final_m,
            "best_metrics": best_m,
            "final_loss": final_m.loss if final_m else None,
            "final_validation_loss": final_validation_loss,
            "best_validation_loss": best_m.validation_loss if best_m else None,
            "lora_config": job.to_dict()["lora"],
            "training_config": job.to_dict()["training"],
            "data_config": job.to_dict()["data"],
            "dataset_path": job.dataset_path,
            "job_id": job.id,
            "run_dir": str(run_dir) if run_dir else None,
            "tags": dict(job.tags),
            "history": {
                "step": [m.step for m in history],
                "loss": [m.loss for m in history],
                "learning_rate": [m.learning_rate for m in history],
                "validation_step": [m.step for m in evaluated],
                "validation_loss": [m.validation_loss for m in evaluated],
            },
            "saved_at": time.time(),
        }
        write_json(tmp / METADATA_FILE, meta)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SavedAdapter(adapter_id, final)
