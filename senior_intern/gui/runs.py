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
