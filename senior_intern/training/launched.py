"""``LaunchedRun``: a data-parallel run in child processes, driven from this process (the app).

``senior-intern train --nproc-per-node N`` runs as a child process (torch's elastic launcher
and its N ranks, ``training/distributed.py``); the relay files (``training/relay.py``) carry
rank 0's events back to ``on_event`` and this process's ``TrainingControl`` to the ranks.
``run()`` returns the run's ``TrainingResult`` like ``Trainer.run`` does, and it always returns:

- the events file is read without blocking, a tenth of a second at a time;
- after a cancel the ranks get ``CANCEL_GRACE`` seconds to save a checkpoint and stop, then
  the launcher gets SIGTERM (it stops its ranks), then ``TERM_GRACE`` seconds later the whole
  process group it leads gets SIGKILL; the launcher is always reaped (by its pid);
- a dead rank ends the run as Failed with the launcher's report (which rank, how it died,
  the ``resume`` command), the lines the CLI prints too.

Nothing here imports torch: the engine runs in the children.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import senior_intern
from senior_intern.config import TrainingJob
from senior_intern.layout import JOB_FILE
from senior_intern.training import relay
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import LogLevel, LogMessage, TrainingStatus
from senior_intern.training.result import TrainingResult

POLL_SECONDS = 0.1
_FAILURE = "error: the distributed run failed"
_RESUME = re.compile(r"^Resume with: senior-intern resume (.+?)(?: --nproc-per-node \d+)?$", re.MULTILINE)


class LaunchedRun:
    """One run of ``senior-intern <args>`` in child processes; ``run()`` drives it to its end."""

    # Within the 60 s the app waits for a run when its window closes (TrainingRunner.shutdown).
    CANCEL_GRACE = 40.0  # seconds from a cancel to SIGTERM of the launcher
    TERM_GRACE = 10.0  # seconds from SIGTERM to SIGKILL of the launcher's process group

    def __init__(self, args: list[str], job_id: str, control: TrainingControl | None = None,
                 on_event: Callable[[object], None] | None = None, folder: Path | None = None) -> None:
        self.args, self.job_id = list(args), job_id
        self.control = control or TrainingControl()
        self.on_event = on_event or (lambda event: None)
        self.folder = folder
        self.pid: int | None = None  # the launcher's, once started

    @classmethod
    def train(cls, job: TrainingJob, control: TrainingControl | None = None, on_event=None) -> "LaunchedRun":
        """A run of ``job`` with ``job.training.processes`` processes."""
        folder = Path(tempfile.mkdtemp(prefix="senior-intern-launch-"))
        path = job.save(folder / JOB_FILE)
        return cls(["train", "--config", str(path)], job.id, control, on_event, folder)

    @classmethod
    def resume(cls, checkpoint: str | Path, job: TrainingJob, control: TrainingControl | None = None,
               on_event=None) -> "LaunchedRun":
        """A resume of ``checkpoint`` (its job says how many processes)."""
        folder = Path(tempfile.mkdtemp(prefix="senior-intern-launch-"))
        return cls(["resume", str(checkpoint), "--nproc-per-node", str(job.training.processes)], job.id, control,
                   on_event, folder)

    def run(self) -> TrainingResult:
        """Start the launcher, relay its events and the control until it ends; the run's result."""
        folder = self.folder or Path(tempfile.mkdtemp(prefix="senior-intern-launch-"))
        events, control_file, log_path = folder / "events.jsonl", folder / "control.json", folder / "launcher.log"
        relay.write_control(control_file, self.control.paused, self.control.cancelled)
        env = dict(os.environ)
        package_root = str(Path(senior_intern.__file__).resolve().parents[1])  # the children import this checkout
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env[relay.EVENTS_ENV], env[relay.CONTROL_ENV] = str(events), str(control_file)
        started = time.time()
        reader, result = relay.EventReader(events), None
        try:
            with log_path.open("wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "senior_intern.cli", *self.args], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.pid = proc.pid
            try:
                result = self._drive(proc, reader, control_file)
            finally:
                self._reap(proc)
            result = self._outcome(proc.returncode, result, log_path.read_text(encoding="utf-8", errors="replace"), started)
        finally:
            reader.close()
            shutil.rmtree(folder, ignore_errors=True)
        return result

    def _drive(self, proc: subprocess.Popen, reader: relay.EventReader, control_file: Path) -> TrainingResult | None:
        result, sent = None, (self.control.paused, self.control.cancelled)
        cancelled_at = terminated_at = None
        while True:
            result = self._relay(reader, result)
            wanted = (self.control.paused, self.control.cancelled)
            if wanted != sent:
                relay.write_control(control_file, *wanted)
                sent = wanted
            if proc.poll() is not None:
                return self._relay(reader, result)  # what rank 0 wrote last
            now = time.monotonic()
            if wanted[1] and cancelled_at is None:
                cancelled_at = now
            if cancelled_at is not None and terminated_at is None and now - cancelled_at > self.CANCEL_GRACE:
                self._log(f"The processes did not stop within {self.CANCEL_GRACE:.0f} s of the cancel; stopping the launcher")
                proc.send_signal(signal.SIGTERM)
                terminated_at = now
            if terminated_at is not None and now - terminated_at > self.TERM_GRACE:
                self._log("The launcher did not stop after SIGTERM; killing its processes")
                self._kill_group(proc)
            time.sleep(POLL_SECONDS)

    def _relay(self, reader: relay.EventReader, result: TrainingResult | None) -> TrainingResult | None:
        for record in reader.read():
            if isinstance(record, TrainingResult):
                result = record
            else:
                self.on_event(record)
        return result

    def _reap(self, proc: subprocess.Popen) -> None:
        """Wait for the launcher; while it is not reaped its pid (and group id) is still ours to kill."""
        if proc.poll() is None:
            self._kill_group(proc)
        proc.wait()

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        if proc.poll() is None:  # not reaped: the group id is still the launcher's
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _log(self, text: str) -> None:
        self.on_event(LogMessage(LogLevel.WARNING, text))

    def _outcome(self, returncode: int, result: TrainingResult | None, log: str, started: float) -> TrainingResult:
        """The result rank 0 sent, or a Failed one with the launcher's report when a process died."""
        if returncode == 0 and result is not None:
            return result
        report = _failure_report(log, returncode)
        died = " killed by SIG" in report  # a rank was killed: that is the cause, not what rank 0 saw next
        if result is not None and result.status == TrainingStatus.FAILED and not died:
            detail = "\n".join(part for part in (result.error_detail, report) if part)
            return _replace(result, error_detail=detail)  # the engine's own message (a bad model, ...)
        if result is not None and result.error_message:
            report += f"\nRank 0 then reported: {result.error_message}"
        found = _RESUME.search(report)
        resume = found.group(1) if found else result.resume_checkpoint if result is not None else None
        return TrainingResult(job_id=self.job_id, status=TrainingStatus.FAILED, error_message=report,
                              error_detail=log[-20000:], resume_checkpoint=resume,
                              started_at=started, ended_at=time.time(), run_dir=result.run_dir if result else None)


def _failure_report(log: str, returncode: int) -> str:
    """The launcher's report of the failed ranks, or the last lines it printed."""
    at = log.rfind(_FAILURE)
    if at >= 0:
        lines = log[at:].splitlines()
        end = next((i for i, line in enumerate(lines) if line.startswith(("Resume with:", "No checkpoint was written"))),
                   len(lines) - 1)
        return "\n".join(lines[: end + 1])
    tail = [line for line in log.replace("\r", "\n").splitlines() if line.strip()][-8:]
    return f"The training processes ended with exit code {returncode} and no result\n" + "\n".join(tail)


def _replace(result: TrainingResult, **changes) -> TrainingResult:
    return dataclasses.replace(result, **changes)
