"""``CheckpointManager``: resumable checkpoints, written atomically (spec v0.8.3f).

A checkpoint folder holds everything needed to continue as if never stopped:

- ``lora.safetensors``   LoRA weights (PEFT key names)
- ``trainer_state.pt``   optimizer and scheduler state dicts and RNG states (tensors and plain
                         containers only; loaded with ``torch.load(weights_only=True)``)
- ``state.json``         step, epoch, loader position, best value, early-stopping counter,
                         metrics history, counters (readable, no pickle)
- ``job.toml``           the exact job

It is written into ``.tmp-<name>`` and renamed into place, so a crash never leaves a half
checkpoint under a real name. Older checkpoints are removed only after the new one is complete.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from senior_intern.config import ConfigError, TrainingJob
from senior_intern.layout import BEST, checkpoint_name, folder_size
from senior_intern.layout import CHECKPOINT_FILES as _FILES
from senior_intern.training.result import CheckpointInfo

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the folder and the problem."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    lora_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    state: dict[str, Any]
    job: TrainingJob

    @property
    def global_step(self) -> int:
        """Optimizer steps completed when it was saved."""
        return int(self.state["global_step"])


def capture_rng_state() -> dict[str, Any]:
    """Python and torch (CPU and CUDA) random states."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``capture_rng_state()`` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_name(step: int) -> str:
    """Folder name of the regular checkpoint at ``step``."""
    return checkpoint_name(step)


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints of one run folder."""

    def __init__(self, checkpoint_dir: str | Path, max_checkpoints: int = 3) -> None:
        if max_checkpoints < 1:
            raise ValueError("Max checkpoints must be at least 1")
        self.dir = Path(checkpoint_dir)
        self.max_checkpoints = max_checkpoints

    # --- writing ----------------------------------------------------------------------------
    def save(
        self,
        name: str,
        *,
        lora_state: dict[str, torch.Tensor],
        trainer_state: dict[str, Any],
        state: dict[str, Any],
        job: TrainingJob,
    ) -> CheckpointInfo:
        """Write a complete checkpoint named ``name`` atomically and prune old ones."""
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / name
        tmp = self.dir / f".tmp-{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        state = {**state, "format_version": FORMAT_VERSION, "created_at": time.time(), "name": name}
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in lora_state.items()}
        save_file(tensors, str(tmp / "lora.safetensors"))
        torch.save(trainer_state, tmp / "trainer_state.pt")
        job.save(tmp / "job.toml")
        # state.json last: its presence marks a complete folder even before the rename.
        (tmp / "state.json").write_text(json.dumps(state, indent=1, allow_nan=True), encoding="utf-8")
        if final.exists():
            old = self.dir / f".old-{name}"
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        if name != BEST:
            self._prune()
        return self._info(final, state)

    def _prune(self) -> None:
        regular = sorted(p for p in self.dir.glob("step-*") if p.is_dir())
        for path in regular[: max(0, len(regular) - self.max_checkpoints)]:
            shutil.rmtree(path, ignore_errors=True)

    # --- reading ----------------------------------------------------------------------------
    @staticmethod
    def _info(path: Path, state: dict[str, Any]) -> CheckpointInfo:
        return CheckpointInfo(
            path=str(path),
            step=int(state.get("global_step", 0)),
            epoch=int(state.get("epoch", 0)),
            loss=state.get("loss"),
            validation_loss=state.get("validation_loss"),
            created_at=float(state.get("created_at", 0.0)),
            size_bytes=folder_size(path),
            is_best=path.name == BEST,
        )

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints (regular ones by step, then best), damaged ones skipped."""
        out = []
        for path in sorted(self.dir.glob("step-*")) + [self.dir / BEST]:
            try:
                out.append(self._info(path, _read_state(path)))
            except CheckpointError:
                continue
        return out

    def latest(self) -> Path | None:
        """Newest loadable regular checkpoint (damaged ones are skipped), or None."""
        for path in sorted(self.dir.glob("step-*"), reverse=True):
            try:
                verify(path)
                return path
            except CheckpointError:
                continue
        return None

    def best(self) -> Path | None:
        """The ``best`` checkpoint when it exists and is loadable, else None."""
        path = self.dir / BEST
        try:
            verify(path)
        except CheckpointError:
            return None
        return path


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint not found: {path}")
    for name in _FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"Checkpoint {path} is damaged: {name} is missing")
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: state.json is not valid JSON ({exc})") from exc
    if not isinstance(state, dict) or "global_step" not in state or "loader" not in state:
        raise CheckpointError(f"Checkpoint {path} is damaged: state.json lacks the run position")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"Checkpoint {path} was written by a newer version (format {state['format_version']})")
    return state


def verify(path: str | Path) -> dict[str, Any]:
    """Check that a checkpoint folder is complete and readable; return its state.json."""
    path = Path(path)
    state = _read_state(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path / "lora.safetensors"), framework="pt") as fh:
            for key in fh.keys():
                fh.get_slice(key)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: lora.safetensors is unreadable ({exc})") from exc
    expected = (path / "lora.safetensors").stat().st_size
    if expected < 8:
        raise CheckpointError(f"Checkpoint {path} is damaged: lora.safetensors is truncated")
    return state


def load(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder; a damaged one raises ``CheckpointError`` naming the problem."""
    path = Path(path)
    state = verify(path)
    try:
        lora_state = load_file(str(path / "lora.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: lora.safetensors is truncated ({exc})") from exc
    try:
        trainer_state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(f"Checkpoint {path} is damaged: trainer_state.pt is unreadable ({exc})") from exc
    try:
        job = TrainingJob.load(path / "job.toml")
    except ConfigError as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: {exc}") from exc
    return Checkpoint(path=path, lora_state=lora_state, trainer_state=trainer_state, state=state, job=job)


def find_resumable(path: str | Path) -> Path:
    """A checkpoint to resume from: the folder itself, or the newest good one of a run folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint or run folder not found: {path}")
    if (path / "state.json").is_file():
        verify(path)
        return path
    for candidate in (path / "checkpoints", path):
        if candidate.is_dir():
            found = CheckpointManager(candidate).latest()
            if found is not None:
                return found
    raise CheckpointError(f"No usable checkpoint in {path}")
