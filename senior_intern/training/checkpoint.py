"""``CheckpointManager``: resumable checkpoints, written atomically (spec v0.8.3f).

A checkpoint folder holds everything needed to continue as if never stopped:

- ``lora.safetensors``   LoRA weights (PEFT key names)
- ``trainer_state.pt``   optimizer and scheduler state dicts and RNG states (tensors and plain
                         containers only; loaded with ``torch.load(weights_only=True)``)
- ``state.json``         step, epoch, loader position, best value, early-stopping counter,
                         metrics history, counters (readable, no pickle)
- ``job.toml``           the exact job

It is written into ``.tmp-<name>``, every file and the folder are fsynced, and then it is
renamed into place, so a crash never leaves a half checkpoint under a real name. ``state.json``
(written last) records the size and SHA-256 of every other file; ``verify()`` checks them, so a
checkpoint that only looks complete (a truncated ``trainer_state.pt``, an empty ``job.toml``) is
skipped in favour of the newest intact one. Free space is checked before a save; a save that
fails removes its temporary folder and keeps the older checkpoints. Older checkpoints are
removed only after the new one is complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from senior_intern.config import ConfigError, TrainingJob
from senior_intern.layout import BEST, JOB_FILE, LORA_FILE, STATE_FILE, TRAINER_STATE_FILE, checkpoint_name, folder_size
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
    """Python and torch (CPU, every CUDA GPU, MPS) random states."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``capture_rng_state()`` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A machine with fewer GPUs than the one that saved: restore the ones it has (the run
        # trains on one of them); extra saved states have no GPU to go to.
        for index, gpu_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file or a folder to the disk (folders: where the OS allows opening them)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NoSpaceError(OSError):
    """Not enough free disk space for a checkpoint; the message says how much is needed."""

    def __str__(self) -> str:
        return str(self.strerror)


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e6:.1f} MB"


def _no_space(folder: Path, needed: int) -> NoSpaceError:
    free = shutil.disk_usage(folder).free
    return NoSpaceError(errno.ENOSPC, f"No space left on {folder}: a checkpoint needs ~{_mb(needed)}, {_mb(free)} free; "
                        "free some space (or lower max_checkpoints) and resume")


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()  # torch.save reports a short write as "unexpected pos" in its zip writer
    return "no space left" in text or "unexpected pos" in text or "disk quota" in text


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
        self.skipped: list[str] = []  # why ``latest()`` passed over newer checkpoints

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
        """Write a complete checkpoint named ``name`` atomically and prune old ones.

        Raises ``NoSpaceError`` (before writing, or when the disk fills during the write) with the
        space needed and free; the temporary folder is removed and older checkpoints stay.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / name
        tmp = self.dir / f".tmp-{name}"
        for stale in self.dir.glob(".tmp-*"):  # left by a crash or a failed save
            shutil.rmtree(stale, ignore_errors=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in lora_state.items()}
        needed = self._expected_size(tensors)
        if shutil.disk_usage(self.dir).free < needed:
            raise _no_space(self.dir, needed)
        tmp.mkdir()
        state = {**state, "format_version": FORMAT_VERSION, "created_at": time.time(), "name": name}
        try:
            save_file(tensors, str(tmp / LORA_FILE))
            torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
            job.save(tmp / JOB_FILE)
            state["files"] = {f: {"size": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)} for f in _FILES if f != STATE_FILE}
            # state.json last: its presence marks a complete folder even before the rename.
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, allow_nan=True), encoding="utf-8")
            for f in _FILES:
                _fsync(tmp / f)
            _fsync(tmp)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if _is_disk_full(exc):
                raise _no_space(self.dir, needed) from exc
            raise
        if final.exists():
            old = self.dir / f".old-{name}"
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync(self.dir)
        if name != BEST:
            self._prune()
        return self._info(final, state)

    def _expected_size(self, tensors: dict[str, torch.Tensor]) -> int:
        """Bytes a new checkpoint will take: the newest existing one's size, else ~4x the LoRA weights
        (weights + Adam's two moments + slack), plus 10% and 1 MB for the small files."""
        existing = sorted(p for p in self.dir.glob("step-*") if p.is_dir())
        base = folder_size(existing[-1]) if existing else 4 * sum(t.numel() * t.element_size() for t in tensors.values())
        return int(base * 1.1) + 1_000_000

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
        """Newest loadable regular checkpoint (damaged ones are skipped and listed in ``skipped``), or None."""
        self.skipped = []
        for path in sorted(self.dir.glob("step-*"), reverse=True):
            try:
                verify(path)
                return path
            except CheckpointError as exc:
                self.skipped.append(str(exc))
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
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
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

        with safe_open(str(path / LORA_FILE), framework="pt") as fh:
            for key in fh.keys():
                fh.get_slice(key)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: lora.safetensors is unreadable ({exc})") from exc
    expected = (path / LORA_FILE).stat().st_size
    if expected < 8:
        raise CheckpointError(f"Checkpoint {path} is damaged: lora.safetensors is truncated")
    for name, meta in (state.get("files") or {}).items():  # older checkpoints have no manifest
        actual = (path / name).stat().st_size
        if actual != meta.get("size"):
            raise CheckpointError(f"Checkpoint {path} is damaged: {name} has {actual} bytes, {meta.get('size')} were written")
        if _sha256(path / name) != meta.get("sha256"):
            raise CheckpointError(f"Checkpoint {path} is damaged: {name} does not match its recorded SHA-256")
    return state


def load(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder; a damaged one raises ``CheckpointError`` naming the problem."""
    path = Path(path)
    state = verify(path)
    try:
        lora_state = load_file(str(path / LORA_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: lora.safetensors is truncated ({exc})") from exc
    try:
        trainer_state = torch.load(path / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(f"Checkpoint {path} is damaged: trainer_state.pt is unreadable ({exc})") from exc
    try:
        job = TrainingJob.load(path / JOB_FILE)
    except ConfigError as exc:
        raise CheckpointError(f"Checkpoint {path} is damaged: {exc}") from exc
    return Checkpoint(path=path, lora_state=lora_state, trainer_state=trainer_state, state=state, job=job)


def find_resumable(path: str | Path, notify: Callable[[str], None] | None = None) -> Path:
    """A checkpoint to resume from: the folder itself, or the newest intact one of a run folder.

    ``notify`` hears one line for each newer checkpoint that was damaged and skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint or run folder not found: {path}")
    if (path / STATE_FILE).is_file():
        verify(path)
        return path
    skipped: list[str] = []
    for candidate in (path / "checkpoints", path):
        if candidate.is_dir():
            manager = CheckpointManager(candidate)
            found = manager.latest()
            skipped += manager.skipped
            if found is not None:
                if notify is not None:
                    for reason in skipped:
                        notify(f"{reason}; resuming from the newest intact checkpoint, {found.name}")
                return found
    if not skipped and (path / JOB_FILE).is_file():  # a run folder stopped before its first save
        raise CheckpointError(
            f"No checkpoint in {path} yet: the run stopped before its first save, so there is nothing to resume. "
            f"Start it again with: senior-intern train --config {path / JOB_FILE}"
        )
    raise CheckpointError(f"No usable checkpoint in {path}" + (": " + "; ".join(skipped) if skipped else ""))
