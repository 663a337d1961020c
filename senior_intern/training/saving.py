"""What a ``Session`` writes and reads back: checkpoints, and the end of its run.

These are ``Session`` methods kept in their own module so session.py stays about preparing
and running the loop; each takes the session as its first argument, and the session's public
methods (``save_checkpoint``, ``finish``, ``stop``) call them:

- ``write_metrics`` / ``write_eval_line``: a line of ``metrics.jsonl`` per step and per evaluation.
- ``save_checkpoint``: a resumable checkpoint of the current state (rank 0 writes, every rank's
  RNG state and loader position go in); ``restore`` puts a checkpoint's state back on resume.
- ``finish_run``: after the last step, in this order: the weights are checked finite, the steps
  since the last periodic save are kept as a final checkpoint (so a failed adapter save loses
  nothing and resume retries it), the history is checked for divergence, the best checkpoint is
  reloaded after early stopping, the final validation loss is taken or computed, the ranks are
  checked to hold the same adapter, and rank 0 saves the adapter into the library and marks the
  run finished.
- ``stop_run``: a cancelled run saves a checkpoint at the start of the interrupted accumulation
  group (best effort); any stopped run says which checkpoint to resume from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from senior_intern.adapters.store import save_adapter
from senior_intern.training import checkpoint as ckpt
from senior_intern.layout import METRICS_FILE
from senior_intern.training.events import LogLevel, TrainingMetrics, TrainingState, TrainingStatus
from senior_intern.training.lifecycle import Finished, Position, RunStopped
from senior_intern.training.metrics import append_jsonl, divergence
from senior_intern.training.runlock import mark_finished

if TYPE_CHECKING:  # typing only: session.py imports this module
    from senior_intern.training.session import Session


def save_checkpoint(s: Session, name: str, at_group_start: bool = False) -> Path:
    """Write a resumable checkpoint of ``s`` named ``name`` (``Saving`` state while it runs)."""
    s.set_state(TrainingState.SAVING, f"Saving checkpoint {name}")
    pos = s.pos
    if at_group_start and s.group_start is not None:
        loader_state, rng_state = s.group_start  # a cancel mid-group: redo the whole group
    else:
        loader_state, rng_state = s.train_loader.state_dict(), ckpt.capture_rng_state()
    last = s.tracker.history[-1] if s.tracker.total_steps else None
    position = dict(vars(pos))
    position["elapsed_before"] = pos.elapsed_before + s.active_seconds()
    state: dict[str, Any] = {
        "global_step": pos.global_step,
        "epoch": pos.epoch,
        "loss": last.loss if last else None,
        "validation_loss": last.validation_loss if last else None,
        "position": position,
        "loader": loader_state,
        "early_stopping": s.early.state_dict(),
        "history": s.tracker.to_records(),
    }
    trainer_state = {
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "rng": rng_state,
        "scaler": s.scaler.state_dict(),
    }
    # Every rank's RNG state and loader position; rank 0 alone writes, the others wait.
    trainer_state["rng_ranks"] = s.dp.gather(rng_state)
    state["world_size"], state["loader_ranks"] = s.dp.world_size, s.dp.gather(loader_state)
    path = s.checkpoints.dir / name
    if s.dp.is_main:
        info = s.checkpoints.save(name, lora_state=s.lora.lora_state_dict(), trainer_state=trainer_state, state=state, job=s.job)
        path = Path(info.path)
        s.log(f"Checkpoint {name} saved ({info.size_bytes / 1e6:.1f} MB)")
    s.dp.barrier()
    if name != ckpt.BEST:
        s.saved_at = pos.global_step
    return path


def restore(s: Session, c: ckpt.Checkpoint) -> None:
    """Put checkpoint ``c`` back into the prepared session ``s``: weights, optimizer, position, history."""
    s.run_dir = c.path.parent.parent
    s.lora.load_lora_state_dict(c.lora_state)
    s.optimizer.load_state_dict(c.trainer_state["optimizer"])
    s.scheduler.load_state_dict(c.trainer_state["scheduler"])
    s.scaler.load_state_dict(c.trainer_state.get("scaler"))
    state = c.state
    saved_world, ranks_rng = int(state.get("world_size", 1)), c.trainer_state.get("rng_ranks")
    same_world = saved_world == s.dp.world_size
    ckpt.restore_rng_state(ranks_rng[s.dp.rank] if same_world and ranks_rng else c.trainer_state["rng"])
    s.pos = Position(**state["position"])
    s.train_loader.load_state_dict(state["loader"])
    if not same_world:  # the loader kept the rows already trained this epoch
        s.pos.step_in_epoch = s.train_loader.index // s.cfg.gradient_accumulation_steps
        s.log(f"The checkpoint was written by {saved_world} process(es), this run has {s.dp.world_size}: "
              f"continuing at batch {s.train_loader.index} of epoch {s.pos.epoch + 1} with "
              f"{s.steps_per_epoch} steps per epoch; not bitwise the same as an uninterrupted run",
              LogLevel.WARNING)
    s.early.load_state_dict(state["early_stopping"])
    s.tracker.load_records(state["history"])
    s.saved_at = s.pos.global_step
    if s.dp.is_main:  # metrics.jsonl anew from the history: lines past the checkpoint go
        with (s.run_dir / METRICS_FILE).open("w", encoding="utf-8"):
            pass
    for m in s.tracker.history:
        write_metrics(s, m)
    s.log(f"Resumed from {c.path} at step {s.pos.global_step} of {s.total_steps}")


def write_metrics(s: Session, m: TrainingMetrics, eval_line: bool = True) -> None:
    """Append the train line of ``m`` to ``metrics.jsonl`` (rank 0), and its eval line when it has one."""
    if not s.dp.is_main:
        return
    append_jsonl(s.run_dir / METRICS_FILE, {"type": "train", "step": m.step, "epoch": m.epoch, "loss": m.loss, "lr": m.learning_rate,
                                            "grad_norm": m.grad_norm, "token_accuracy": m.token_accuracy, "time": m.timestamp})
    if eval_line and m.validation_loss is not None:
        write_eval_line(s, m.step, m.epoch, m.validation_loss, m.validation_accuracy)


def write_eval_line(s: Session, step: int, epoch: int, loss: float, acc: float | None) -> None:
    """Append an evaluation's line to ``metrics.jsonl`` (rank 0)."""
    if not s.dp.is_main:
        return
    append_jsonl(s.run_dir / METRICS_FILE,
                 {"type": "eval", "step": step, "epoch": epoch, "validation_loss": loss, "validation_accuracy": acc, "time": time.time()})


def finish_run(s: Session, early_stopped: bool) -> Finished:
    """The end of a run that trained to its last step (or stopped early); ``RunStopped`` on a failure."""
    status = TrainingStatus.EARLY_STOPPED if early_stopped else TrainingStatus.COMPLETED
    if not all(torch.isfinite(p).all() for p in s.params):
        raise RunStopped("failed", "The adapter weights are not finite (the run diverged); no adapter was saved. "
                         "Lower the learning rate (or LoRA alpha) and train again")
    # The last steps since the last periodic save are kept before anything else can fail:
    # a failed adapter save (full disk) then loses nothing and resume retries it.
    step = s.pos.global_step
    final_checkpoint = save_checkpoint(s, ckpt.step_name(step)) if s.saved_at != step else None
    diverged = divergence(s.tracker.history)
    if diverged is not None:
        raise RunStopped("failed", f"The run diverged: {diverged}; no adapter was saved. Lower the learning rate and train again")
    if early_stopped and s.checkpoints.best() is not None:
        s.lora.load_lora_state_dict(ckpt.load(s.checkpoints.best()).lora_state)
        s.log("Final adapter taken from the best checkpoint")
    final_val = _final_validation(s, early_stopped)
    s.set_state(TrainingState.SAVING, "Saving the adapter")
    record = None
    if s.dp.enabled:  # data parallel: the same adapter on every rank, or the run fails
        s.log(f"Adapter identical on all {s.dp.world_size} ranks (sha256 {s.dp.check_identical(s.lora.lora_state_dict())[:16]})")
    if s.dp.is_main:  # rank 0 alone writes the adapter
        record = _save_adapter(s, final_val, final_checkpoint, status)
    s.dp.barrier()
    return Finished(status, record.id if record else None, Path(record.path) if record else None, final_val, final_checkpoint)


def _final_validation(s: Session, early_stopped: bool) -> float | None:
    """The best loss after early stopping, the last evaluation when it was at this step, else a new one."""
    if s.val_loader is None:
        return None
    best = s.pos.best_validation_loss
    if early_stopped and best is not None:
        return best
    if s.pos.evaluated_at == s.pos.global_step and s.last_validation is not None:
        return s.last_validation[0]
    s.set_state(TrainingState.EVALUATING, "Final evaluation")
    return s.evaluate()[0]


def _save_adapter(s: Session, final_val: float | None, final_checkpoint: Path | None, status: TrainingStatus):
    """Write the adapter into the library and mark the run finished; a failure says how to retry."""
    try:
        record = save_adapter(
            s.default_adapters_dir(),
            lora=s.lora,
            job=s.job,
            model_info=s.model_info,
            history=s.tracker.history,
            final_validation_loss=final_val,
            run_dir=s.run_dir,
        )
    except OSError as exc:
        kept = final_checkpoint or s.checkpoints.latest()
        raise RunStopped(
            "failed",
            f"Could not save the adapter to {s.default_adapters_dir()}: {exc}. All training is kept in the "
            f"checkpoint {kept}; free space (or fix the library folder) and retry the save with: "
            f"senior-intern resume {s.run_dir}",
        ) from exc
    mark_finished(s.run_dir, record.id, str(record.path), status.value)
    s.log(f"Adapter saved: {record.path}")
    return record


def stop_run(s: Session, kind: str) -> str | None:
    """A stopped run (``kind`` "cancelled" or "failed"): the checkpoint to resume from, or None.

    A cancel after at least one step saves a checkpoint at the start of the interrupted group
    (best effort: an error is logged and the newest good checkpoint is named instead).
    """
    if s.checkpoints is None:  # stopped before the run folder existed
        return None
    resume_from = None
    if kind == "cancelled" and s.pos.global_step > 0:
        try:
            resume_from = str(save_checkpoint(s, ckpt.step_name(s.pos.global_step), at_group_start=True))
        except Exception as exc:  # saving on cancel is best effort; the last good one remains
            s.log(f"Could not save a checkpoint on cancel: {exc}", LogLevel.ERROR)
    if resume_from is None:
        latest = s.checkpoints.latest()
        resume_from = str(latest) if latest else None
    return resume_from
