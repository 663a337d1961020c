"""``TaskRunner``: run a slow function on a background thread, get the result in the GUI thread.

Used for everything that may import torch or touch the disk for long (model metadata, dataset
analysis, the adapter library, exports). Callbacks always run in the GUI thread: the worker
thread only emits a signal that is queued to the runner, which lives in the GUI thread.

Every task has a name and a ``TaskInfo`` (progress, ETA, outcome) that the activity centre
(``gui/activity.py``) shows. A task submitted with ``control=True`` gets a ``TaskControl`` as
its ``task`` keyword: it reports ``progress(done, total)`` and, when ``cancellable``, ends early
with ``TaskCancelled`` once the user presses Cancel. Work that runs on its own thread (training
start, the playground) is shown too, through ``track`` / ``update`` / ``end``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from senior_intern.gui.threads import prepare_background_thread

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


class TaskCancelled(Exception):
    """Raised inside a task when the user cancelled it."""


@dataclass
class TaskInfo:
    """What the activity centre shows about one task."""

    id: int
    name: str
    cancellable: bool = False
    notify: bool = False  # announce the end (Open folder / Copy path when ``path`` is set)
    done: int = 0
    total: int = 0  # 0: no measurable progress (an indeterminate bar)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    outcome: str = RUNNING
    path: str | None = None
    message: str = ""
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    on_cancel: Callable[[], None] | None = field(default=None, repr=False)

    def elapsed(self) -> float:
        """Seconds since the task started (until it ended)."""
        return (self.ended or time.monotonic()) - self.started

    def fraction(self) -> float | None:
        """Share done (0–1), or None when the task does not report progress."""
        return min(1.0, self.done / self.total) if self.total > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the pace so far, or None while it cannot be known."""
        if self.total <= 0 or self.done <= 0 or self.done >= self.total:
            return None
        return self.elapsed() / self.done * (self.total - self.done)


class TaskControl:
    """Given to a task function (``task=``): report progress, notice a cancel (thread-safe)."""

    def __init__(self, runner: "TaskRunner", info: TaskInfo) -> None:
        self._runner, self._info = runner, info

    @property
    def cancelled(self) -> bool:
        """True once the user asked to cancel."""
        return self._info.cancel_requested.is_set()

    def check(self) -> None:
        """Raise ``TaskCancelled`` when the user asked to cancel."""
        if self.cancelled:
            raise TaskCancelled(f"{self._info.name} was cancelled")

    def progress(self, done: int, total: int, *_: Any) -> None:
        """``done`` of ``total`` units finished (extra arguments, such as a tensor name, are ignored); checks for a cancel."""
        try:
            self._runner._progress.emit(self._info.id, int(done), int(total))
        except RuntimeError:  # the runner was destroyed (window closed)
            pass
        self.check()


class _Job(QRunnable):
    """One call of ``fn(*args)`` on the pool; reports through the runner's queued signal."""

    def __init__(self, runner: "TaskRunner", task_id: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        super().__init__()
        self._runner, self._id, self._fn, self._args, self._kwargs = runner, task_id, fn, args, kwargs

    def run(self) -> None:
        """Call the function and hand the result or the exception to the GUI thread."""
        prepare_background_thread()
        try:
            value, ok = self._fn(*self._args, **self._kwargs), True
        except Exception as exc:  # every failure is shown to the user as a readable message
            value, ok = exc, False
        try:
            self._runner._finished.emit(self._id, ok, value)
        except RuntimeError:  # the runner was destroyed while the task ran (window closed)
            pass


class TaskRunner(QObject):
    """A small private thread pool whose results are delivered in the GUI thread.

    ``busy_changed(bool)`` tells whether any pool task is pending; ``tasks_changed(names)``,
    ``task_updated(TaskInfo)`` and ``task_ended(TaskInfo)`` feed the activity centre.
    """

    busy_changed = Signal(bool)
    tasks_changed = Signal(list)  # the names of the tasks queued or running, oldest first
    task_updated = Signal(object)  # TaskInfo: started, progressed or asked to cancel
    task_ended = Signal(object)  # TaskInfo with its outcome
    _finished = Signal(int, bool, object)
    _progress = Signal(int, int, int)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, tuple[Callable | None, ...]] = {}
        self._keys: dict[int, str] = {}
        self._latest: dict[str, int] = {}
        self._infos: dict[int, TaskInfo] = {}
        self._finished.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._progress.connect(self.update, Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> bool:
        """True while a pool task is queued or running."""
        return bool(self._callbacks)

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        latest: str | None = None,
        name: str | None = None,
        control: bool = False,
        cancellable: bool = False,
        notify: bool = False,
        result_path: Callable[[Any], Any] | None = None,
        result_note: Callable[[Any], str] | None = None,
    ) -> int:
        """Run ``fn(*args)`` in the background; return the task id.

        ``on_done(result)`` or ``on_error(exception)`` is then called in the GUI thread (a
        cancelled task calls ``on_cancelled()`` instead). With ``latest`` (a name such as ``"dataset analysis"``),
        only the newest task of that name reports back: results of older ones, made for settings
        that have changed, are dropped. ``control`` passes a ``TaskControl`` as ``task=``;
        ``notify`` announces the end, with the file or folder ``result_path(result)`` names and the
        words ``result_note(result)`` adds (what to do with it next).
        """
        task_id = next(self._ids)
        was_busy = self.busy
        self._callbacks[task_id] = (on_done, on_error, on_cancelled, result_path, result_note)
        info = TaskInfo(task_id, name or latest or getattr(fn, "__name__", "task").strip("_").replace("_", " "),
                        cancellable=cancellable, notify=notify or result_path is not None or result_note is not None)
        self._infos[task_id] = info
        if latest is not None:
            self._keys[task_id] = latest
            self._latest[latest] = task_id
        if not was_busy:
            self.busy_changed.emit(True)
        kwargs = {"task": TaskControl(self, info)} if control else {}
        self._pool.start(_Job(self, task_id, fn, args, kwargs))
        self._changed(info)
        return task_id

    def names(self) -> list[str]:
        """Names of the tasks queued or running (for the activity indicator), oldest first."""
        return [self._infos[i].name for i in sorted(self._infos)]

    def running(self) -> list[TaskInfo]:
        """The tasks queued or running, oldest first."""
        return [self._infos[i] for i in sorted(self._infos)]

    def info(self, task_id: int) -> TaskInfo | None:
        """The running task with this id, or None once it ended."""
        return self._infos.get(task_id)

    def cancel(self, task_id: int) -> bool:
        """Ask a cancellable task to stop; True when it was asked."""
        info = self._infos.get(task_id)
        if info is None or not info.cancellable or info.cancel_requested.is_set():
            return False
        info.cancel_requested.set()
        info.message = "Cancelling…"
        if info.on_cancel is not None:
            info.on_cancel()
        self.task_updated.emit(info)
        return True

    # --- work on its own thread -------------------------------------------------------------
    def track(self, name: str, on_cancel: Callable[[], None] | None = None, notify: bool = False) -> int:
        """Show work that runs elsewhere (its own thread) as a task; ``on_cancel`` makes it cancellable."""
        task_id = next(self._ids)
        info = TaskInfo(task_id, name, cancellable=on_cancel is not None, notify=notify, on_cancel=on_cancel)
        self._infos[task_id] = info
        self._changed(info)
        return task_id

    @Slot(int, int, int)
    def update(self, task_id: int, done: int, total: int) -> None:
        """Record the progress of a task (GUI thread)."""
        info = self._infos.get(task_id)
        if info is not None and (info.done, info.total) != (done, total):
            info.done, info.total = done, total
            self.task_updated.emit(info)

    def end(self, task_id: int, outcome: str = DONE, path: Any = None, message: str = "") -> None:
        """Close a task (tracked or pooled) with its outcome; announces it."""
        info = self._infos.pop(task_id, None)
        if info is None:
            return
        if outcome == FAILED and info.cancel_requested.is_set():
            outcome = CANCELLED
        info.outcome, info.ended, info.message = outcome, time.monotonic(), message
        info.path = str(path) if path else None
        self.task_ended.emit(info)
        self.tasks_changed.emit(self.names())

    def _changed(self, info: TaskInfo) -> None:
        self.tasks_changed.emit(self.names())
        self.task_updated.emit(info)

    @Slot(int, bool, object)
    def _dispatch(self, task_id: int, ok: bool, value: Any) -> None:
        on_done, on_error, on_cancelled, result_path, result_note = self._callbacks.pop(task_id, (None,) * 5)
        key = self._keys.pop(task_id, None)
        if key is not None and self._latest.get(key) != task_id:
            on_done = on_error = on_cancelled = None  # superseded by a newer task of the same name
        cancelled = not ok and isinstance(value, TaskCancelled)
        outcome = DONE if ok else CANCELLED if cancelled else FAILED
        path, note = None, ""
        if ok and result_path is not None:
            try:
                path = result_path(value)
            except Exception:  # a result without a path: announce without the buttons
                path = None
        if ok and result_note is not None:
            try:
                note = result_note(value)
            except Exception:  # a result the note cannot describe: announce without it
                note = ""
        try:
            if ok and on_done is not None:
                on_done(value)
            elif cancelled and on_cancelled is not None:
                on_cancelled()
            elif not ok and not cancelled and on_error is not None:
                on_error(value)
        finally:
            self.end(task_id, outcome, path, note if ok else "" if cancelled else str(value))
            if not self.busy:
                self.busy_changed.emit(False)

    def forget(self, latest: str) -> None:
        """Drop the result of the pending task named ``latest`` (its settings are gone)."""
        self._latest.pop(latest, None)

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the running tasks end (for shutdown and tests); True when all ended."""
        return self._pool.waitForDone(timeout_ms)
