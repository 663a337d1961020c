"""The training run on a ``QThread``, its events re-emitted as Qt signals in the GUI thread.

``TrainingWorker`` lives in the worker thread: it imports the engine when the job starts (so the
GUI never waits for torch at start-up), runs ``Trainer.run`` / ``Trainer.resume`` and turns every
engine event into a signal. ``TrainingRunner`` lives in the GUI thread: it owns the thread and the
``TrainingControl``, receives the worker's signals through queued connections and re-emits them,
so whatever connects to the runner runs in the GUI thread and may touch widgets.

A job with ``training.processes`` > 1 (or the resume of one) runs data-parallel in child
processes: the worker drives a ``training.launched.LaunchedRun`` (torch's elastic launcher
through ``senior-intern train``), which hands rank 0's events to the same signals and this
run's pause/resume/cancel to every rank (``training/relay.py``).
"""

from __future__ import annotations

import gc
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from senior_intern.config import TrainingJob
from senior_intern.layout import JOB_FILE
from senior_intern.gui.threads import prepare_background_thread, worker_thread
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import Evaluated, LogMessage, ModelOpening, Progress, StateChanged, WorldInfo

_frozen = False


def freeze_imported_objects() -> None:
    """Keep Python's garbage collections short while a run shares the process with the window.

    After torch and transformers are imported the interpreter tracks some 300,000 objects; a
    full collection scans them all while holding the GIL (about 0.3 s), which freezes the event
    loop. Moving what exists now (modules, classes, functions) into the permanent generation
    (``gc.freeze``) leaves collections only the run's own objects to scan (a few ms). Done once
    per process, so what later runs leave behind is still collected.
    """
    global _frozen
    if _frozen:
        return
    import transformers  # noqa: F401 - imported here so that its objects are frozen too
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    gc.freeze()
    _frozen = True


class TrainingWorker(QObject):
    """Runs one job (or one resume) in the thread it was moved to; never touches a widget."""

    state_changed = Signal(object)  # StateChanged
    progress = Signal(object)  # Progress
    evaluated = Signal(object)  # Evaluated
    log = Signal(object)  # LogMessage
    opening = Signal(object)  # ModelOpening
    world = Signal(object)  # WorldInfo (data-parallel runs)
    finished = Signal(object)  # TrainingResult
    failed = Signal(object)  # Exception raised outside the engine's own handling

    def __init__(self, control: TrainingControl, job: TrainingJob | None = None, resume_from: str | Path | None = None) -> None:
        super().__init__()
        if (job is None) == (resume_from is None):
            raise ValueError("Give either a job to run or a checkpoint/run folder to resume, not both")
        self.control, self.job, self.resume_from = control, job, resume_from

    @Slot()
    def run(self) -> None:
        """Train to the end; emits ``finished(result)`` or ``failed(exception)``."""
        prepare_background_thread()
        try:
            launched = self._launched_run()
            if launched is not None:
                result = launched.run()
            else:
                from senior_intern.training.engine import Trainer

                freeze_imported_objects()
                trainer = Trainer()
                if self.job is not None:
                    result = trainer.run(self.job, self.control, self._on_event)
                else:
                    result = trainer.resume(self.resume_from, self.control, self._on_event)
        except Exception as exc:  # engine import errors, a damaged checkpoint to resume from...
            self.failed.emit(exc)
        else:
            self.finished.emit(result)
        finally:
            QThread.currentThread().quit()  # the thread ends with the run, even if nobody waits on it

    def _launched_run(self):
        """A ``LaunchedRun`` when the job (or the run to resume) has more than one process, else None."""
        from senior_intern.training.launched import LaunchedRun

        if self.job is not None:
            return LaunchedRun.train(self.job, self.control, self._on_event) if self.job.training.processes > 1 else None
        from senior_intern.training import checkpoint as ckpt

        found = ckpt.find_resumable(self.resume_from)
        job = TrainingJob.load(found / JOB_FILE)
        return LaunchedRun.resume(found, job, self.control, self._on_event) if job.training.processes > 1 else None

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self.progress.emit(event)
        elif isinstance(event, StateChanged):
            self.state_changed.emit(event)
        elif isinstance(event, Evaluated):
            self.evaluated.emit(event)
        elif isinstance(event, LogMessage):
            self.log.emit(event)
        elif isinstance(event, ModelOpening):
            self.opening.emit(event)
        elif isinstance(event, WorldInfo):
            self.world.emit(event)


class TrainingRunner(QObject):
    """Starts runs on a worker thread and relays their signals in the GUI thread; one run at a time."""

    started = Signal()
    state_changed = Signal(object)
    progress = Signal(object)
    evaluated = Signal(object)
    log = Signal(object)
    opening = Signal(object)  # ModelOpening
    world = Signal(object)  # WorldInfo
    finished = Signal(object)  # TrainingResult
    failed = Signal(object)  # Exception
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self.control: TrainingControl | None = None

    @property
    def running(self) -> bool:
        """True from ``start``/``resume`` until the worker thread has ended."""
        return self._thread is not None

    def start(self, job: TrainingJob) -> None:
        """Train ``job`` in the background."""
        self._launch(job=job)

    def resume(self, path: str | Path) -> None:
        """Continue the run of a checkpoint folder or run folder in the background."""
        self._launch(resume_from=path)

    def _launch(self, job: TrainingJob | None = None, resume_from: str | Path | None = None) -> None:
        if self.running:
            raise RuntimeError("A training run is already in progress; wait for it to end or cancel it first")
        self.control = TrainingControl()
        worker = TrainingWorker(self.control, job=job, resume_from=resume_from)
        thread = worker_thread(worker, [
            (worker.state_changed, self.state_changed), (worker.progress, self.progress), (worker.evaluated, self.evaluated),
            (worker.log, self.log), (worker.opening, self.opening), (worker.world, self.world),
            (worker.finished, self._on_finished), (worker.failed, self._on_failed)], "training-worker")
        self._thread, self._worker = thread, worker
        thread.start()
        self.running_changed.emit(True)
        self.started.emit()

    @Slot(object)
    def _on_finished(self, result: object) -> None:
        self._stop_thread()
        self.finished.emit(result)

    @Slot(object)
    def _on_failed(self, exc: object) -> None:
        self._stop_thread()
        self.failed.emit(exc)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
            self._thread = None
            self._worker = None
            self.running_changed.emit(False)

    # --- control ----------------------------------------------------------------------------------
    def pause(self) -> None:
        """Ask the run to pause at the next micro-batch boundary."""
        if self.control is not None:
            self.control.pause()

    def resume_run(self) -> None:
        """Let a paused run continue."""
        if self.control is not None:
            self.control.resume()

    def cancel(self) -> None:
        """Ask the run to stop; it saves a resumable checkpoint and ends as Cancelled."""
        if self.control is not None:
            self.control.cancel()

    @property
    def paused(self) -> bool:
        """True while a pause is requested."""
        return self.control is not None and self.control.paused

    def shutdown(self, timeout_ms: int = 60000) -> bool:
        """Cancel a run in progress and wait for its thread (window closing); True when it ended."""
        if self._thread is None:
            return True
        self.cancel()
        ended = self._thread.wait(timeout_ms)
        if ended:
            self._thread = None
            self._worker = None
        return ended
