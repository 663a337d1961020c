"""``senior-intern estimate``: what a job will need before it runs — steps, parameters, memory, disk,
time, whether it fits on the device and the largest batch that does.

Takes the same job options as ``train`` (its parser is reused as a parent, so every option and
its help match). Exit status 0 when the job fits, 1 when it does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from senior_intern.cli import train_cmd
from senior_intern.hardware.metrics import format_bytes
from senior_intern.models.info import format_parameter_count


def _train_parser() -> argparse.ArgumentParser:
    """The ``train`` sub-command's parser, built by ``train_cmd.register`` (used as a parent)."""
    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    train_cmd.register(sub)
    return sub.choices["train"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``estimate`` sub-command."""
    parser = subparsers.add_parser(
        "estimate",
        parents=[_train_parser()],
        add_help=False,
        help="estimate steps, memory, disk and time of a job before training",
        description="Estimate what a training job needs (steps, trainable parameters, peak memory by part, disk, "
                    "duration), whether it fits on the device, and the largest batch size that does. Takes the "
                    "same options as 'train'.",
    )
    parser.add_argument("--probe", action="store_true",
                        help="also time a few real steps of the job in a separate process (slower, measured)")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.set_defaults(func=cmd_estimate)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(est, job_name: str = "") -> str:
    """The estimate as the lines ``senior-intern estimate`` prints."""
    share = est.trainable_parameters / est.total_parameters if est.total_parameters else 0.0
    free = f" of {format_bytes(est.available_memory)} free" if est.available_memory is not None else ""
    lines = [
        f"Estimate{' for ' + job_name if job_name else ''} on {est.device} ({est.dtype}): batch {est.batch_size} x "
        f"{est.sequence_length} tokens",
        f"Steps: {est.total_steps:,} ({est.steps_per_epoch:,} per epoch), about {est.tokens_per_step:,} tokens per step",
        f"Trainable parameters: {est.trainable_parameters:,} ({format_parameter_count(est.trainable_parameters)}, "
        f"{share:.2%} of {format_parameter_count(est.total_parameters)})",
        f"Peak memory: {format_bytes(est.peak_memory)}{free}: {'fits' if est.fits else 'DOES NOT FIT'}",
    ]
    lines += [f"  {label:<16} {format_bytes(size):>10}" for label, size in est.memory.items()]
    if est.measured_peak_memory is not None:
        lines.append(f"  measured by the probe: {format_bytes(est.measured_peak_memory)}")
    source = "measured by the probe" if est.duration_method == "probe" else "from FLOPs and this device's speed"
    lines += [
        f"Disk: {format_bytes(est.disk_bytes)} (checkpoints kept and the adapter)",
        f"Duration: about {_duration(est.duration_seconds)} ({est.seconds_per_step:.2f} s per step, {source})",
        f"Recommended: device {est.recommended_device}, batch size up to {est.recommended_batch_size}",
    ]
    lines += [f"warning: {w}" for w in est.warnings]
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    """``estimate``: build the job as ``train`` does and print its estimate; 1 when it does not fit."""
    from senior_intern.training.estimate import estimate

    job = train_cmd.build_job(args)
    if args.save_config:
        job.save(args.save_config)
        print(f"Job written to {args.save_config}", file=sys.stderr)
    est = estimate(job, probe=args.probe)
    if args.json:
        print(json.dumps(dataclasses.asdict(est) | {"peak_memory": est.peak_memory}, indent=1))
    else:
        print(format_estimate(est, job.name))
    return 0 if est.fits else 1
