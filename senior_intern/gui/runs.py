"""Finding interrupted runs to offer for resuming, without importing torch.

The rule: a run folder under the runs folder is *interrupted* when it holds at least one
complete regular checkpoint (``checkpoints/step-*/state.json``; ``state.json`` is written last,
so its presence marks a complete folder) and no adapter in its job's adapter library names that
folder as its ``run_dir`` (the engine records it in ``senior_intern.json`` when a run finishes).
A cancelled or failed run therefore counts; a completed or early-stopped one does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from senior_intern import layout, paths
from senior_intern.config import ConfigError, TrainingJob

METADATA_FILE = layout.ADAPTER_METADATA_FILE  # written by senior_intern.adapters.store


@dataclass(frozen=True)
class InterruptedRun:
    """A run that stopped before producing its adapter and can be resumed."""

    run_dir: Path
    name: str
    step: int  # optimizer steps done at its newest checkpoint
    modified: float  # time of that checkpoint (seconds since the epoch)


def adapter_run_dirs(library_root: str | Path) -> set[Path]:
    """Run folders (resolved) that adapters in the library were trained in."""
    found: set[Path] = set()
    root = Path(library_root)
    if not root.is_dir():
        return found
    for meta in root.glob(f"*/{METADATA_FILE}"):
        try:
            run_dir = json.loads(meta.read_text(encoding="utf-8")).get("run_dir")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(run_dir, str) and run_dir:
            found.add(Path(run_dir).resolve())
    return found


def _library_of(run_dir: Path) -> Path:
    try:
        job = TrainingJob.load(run_dir / layout.JOB_FILE)
    except (OSError, ConfigError):
        return paths.adapters_dir()
    return Path(job.adapters_dir) if job.adapters_dir else paths.adapters_dir()


def find_interrupted_runs(runs_root: str | Path | None = None) -> list[InterruptedRun]:
    """Interrupted runs under ``runs_root`` (default: the runs folder), newest first."""
    root = Path(runs_root) if runs_root is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    finished: dict[Path, set[Path]] = {}
    out = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        states = sorted((run_dir / layout.CHECKPOINTS_DIR).glob(f"{layout.CHECKPOINT_PREFIX}*/{layout.STATE_FILE}"))
        if not states:
            continue
        library = _library_of(run_dir)
        if library not in finished:
            finished[library] = adapter_run_dirs(library)
        if run_dir.resolve() in finished[library]:
            continue
        newest = states[-1]
        step = layout.checkpoint_step(newest.parent.name)
        if step is None:
            continue
        out.append(InterruptedRun(run_dir, run_dir.name, step, newest.stat().st_mtime))
    return sorted(out, key=lambda r: r.modified, reverse=True)


@dataclass
class RunHistory:
    """What a run recorded in its ``metrics.jsonl`` up to the checkpoint it resumes from."""

    steps: list[int]
    losses: list[float]
    learning_rates: list[float]
    grad_norms: list[float | None]
    validation_steps: list[int]
    validation_losses: list[float]

    @property
    def last_step(self) -> int:
        """The last optimizer step recorded (0 when none)."""
        return self.steps[-1] if self.steps else 0


def _resume_point(path: Path) -> tuple[Path, int | None]:
    """(run folder, step of the checkpoint resumed from) for a run folder or one of its checkpoints."""
    if path.parent.name == layout.CHECKPOINTS_DIR:  # a checkpoint folder (step-… or best)
        run_dir = path.parent.parent
        step = layout.checkpoint_step(path.name)
        if step is None and (path / layout.STATE_FILE).is_file():
            try:
                step = int(json.loads((path / layout.STATE_FILE).read_text(encoding="utf-8"))["position"]["global_step"])
            except (OSError, ValueError, KeyError, TypeError):
                step = None
        return run_dir, step
    steps = [layout.checkpoint_step(p.parent.name)
             for p in (path / layout.CHECKPOINTS_DIR).glob(f"{layout.CHECKPOINT_PREFIX}*/{layout.STATE_FILE}")]
    steps = [s for s in steps if s is not None]
    return path, max(steps) if steps else None


def run_history(path: str | Path) -> RunHistory | None:
    """The training and validation points of the run being resumed from ``path`` (a run folder or a
    checkpoint), cut at the checkpoint's step (later points are trained again); None without metrics."""
    run_dir, until = _resume_point(Path(path))
    metrics = run_dir / layout.METRICS_FILE
    if not metrics.is_file():
        return None
    history = RunHistory([], [], [], [], [], [])
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):  # a line cut by a crash: skip it
            continue
        if until is not None and step > until:
            continue
        if record.get("type") == "train" and record.get("loss") is not None:
            history.steps.append(step)
            history.losses.append(float(record["loss"]))
            history.learning_rates.append(float(record.get("lr") or 0.0))
            history.grad_norms.append(record.get("grad_norm"))
        elif record.get("type") == "eval" and record.get("validation_loss") is not None:
            history.validation_steps.append(step)
            history.validation_losses.append(float(record["validation_loss"]))
    return history if history.steps or history.validation_steps else None
