"""Set-up of the app's background threads (QThreads and the task pool).

They give way to the window (a lower scheduling priority) and carry the tracing hooks that
Python threads inherit from ``threading`` (so coverage, profilers and debuggers see them too).
"""

from __future__ import annotations

import os
import sys
import threading

from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread


def lower_thread_priority(steps: int = 5) -> None:
    """Make the calling thread yield the CPU to the window when both want it.

    Linux applies ``nice`` per thread (its id is the native thread id): the thread gets the
    window's nice value plus ``steps`` (calling it again changes nothing); elsewhere Qt's thread
    priority does the same. Training loses nothing on an idle machine and the window stays
    smooth on a busy one.
    """
    QThread.currentThread().setPriority(QThread.Priority.LowPriority)
    if sys.platform.startswith("linux"):
        try:
            base = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main (window) thread's nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, base + steps))
        except OSError:  # not allowed here: keep the normal priority
            pass


def prepare_background_thread() -> None:
    """Call first thing in a QThread or pool thread: lower its priority, inherit trace/profile hooks."""
    trace, profile = threading.gettrace(), threading.getprofile()
    if trace is not None:
        sys.settrace(trace)
    if profile is not None:
        sys.setprofile(profile)
    lower_thread_priority()


def worker_thread(worker: QObject, connections: Iterable[tuple[Any, Callable[..., Any]]], name: str = "") -> QThread:
    """A QThread (not started yet) that runs ``worker.run``, with each (worker signal, GUI slot) of
    ``connections`` queued, so the slots run in the GUI thread."""
    thread = QThread()
    if name:
        thread.setObjectName(name)
    worker.moveToThread(thread)
    for signal, slot in connections:
        signal.connect(slot, Qt.ConnectionType.QueuedConnection)
    thread.started.connect(worker.run)
    return thread
