"""``TaskRunner``: run a slow function on a background thread, get the result in the GUI thread.

Used for everything that may import torch or touch the disk for long (model metadata, dataset
analysis, the adapter library, exports). Callbacks always run in the GUI thread: the worker
thread only emits a signal that is queued to the runner, which lives in the GUI thread.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from senior_intern.gui.threads import prepare_background_thread


class _Job(QRunnable):
    """One call of ``fn(*args)`` on the pool; reports through the runner's queued signal."""

    def __init__(self, runner: "TaskRunner", task_id: int, fn: Callable[..., Any], args: tuple) -> None:
        super().__init__()
        self._runner, self._id, self._fn, self._args = runner, task_id, fn, args

    def run(self) -> None:
        """Call the function and hand the result or the exception to the GUI thread."""
        prepare_background_thread()
        try:
            value, ok = self._fn(*self._args), True
        except Exception as exc:  # every failure is shown to the user as a readable message
            value, ok = exc, False
        try:
            self._runner._finished.emit(self._id, ok, value)
        except RuntimeError:  # the runner was destroyed while the task ran (window closed)
            pass


class TaskRunner(QObject):
    """A small private thread pool whose results are delivered in the GUI thread.

    ``busy_changed(bool)`` tells whether any task is pending, for busy indicators.
    """

    busy_changed = Signal(bool)
    tasks_changed = Signal(list)  # the names of the tasks queued or running, oldest first
    _finished = Signal(int, bool, object)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, tuple[Callable | None, Callable | None]] = {}
        self._keys: dict[int, str] = {}
        self._latest: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._finished.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> bool:
        """True while a task is queued or running."""
        return bool(self._callbacks)

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        latest: str | None = None,
        name: str | None = None,
    ) -> int:
        """Run ``fn(*args)`` in the background; return the task id.

        ``on_done(result)`` or ``on_error(exception)`` is then called in the GUI thread. With
        ``latest`` (a name such as ``"dataset analysis"``), only the newest task of that name
        reports back: results of older ones, made for settings that have changed, are dropped.
        """
        task_id = next(self._ids)
        was_busy = self.busy
        self._callbacks[task_id] = (on_done, on_error)
        self._names[task_id] = name or latest or getattr(fn, "__name__", "task").strip("_").replace("_", " ")
        if latest is not None:
            self._keys[task_id] = latest
            self._latest[latest] = task_id
        if not was_busy:
            self.busy_changed.emit(True)
        self._pool.start(_Job(self, task_id, fn, args))
        self.tasks_changed.emit(self.names())
        return task_id

    def names(self) -> list[str]:
        """Names of the tasks queued or running (for the activity indicator), oldest first."""
        return [self._names[i] for i in sorted(self._names)]

    @Slot(int, bool, object)
    def _dispatch(self, task_id: int, ok: bool, value: Any) -> None:
        on_done, on_error = self._callbacks.pop(task_id, (None, None))
        self._names.pop(task_id, None)
        key = self._keys.pop(task_id, None)
        if key is not None and self._latest.get(key) != task_id:
            on_done = on_error = None  # superseded by a newer task of the same name
        try:
            if ok and on_done is not None:
                on_done(value)
            elif not ok and on_error is not None:
                on_error(value)
        finally:
            self.tasks_changed.emit(self.names())
            if not self.busy:
                self.busy_changed.emit(False)

    def forget(self, latest: str) -> None:
        """Drop the result of the pending task named ``latest`` (its settings are gone)."""
        self._latest.pop(latest, None)

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the running tasks end (for shutdown and tests); True when all ended."""
        return self._pool.waitForDone(timeout_ms)
