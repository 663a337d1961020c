"""``TrainingControl``: the shared flag through which a GUI or CLI pauses, resumes or cancels a run.

The engine checks it between micro-batches. It is thread-safe and waiting on it uses no CPU.
"""

from __future__ import annotations

import threading


class TrainingControl:
    """Pause / resume / cancel requests for one run, safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._paused = False
        self._cancelled = False

    def pause(self) -> None:
        """Ask the run to pause at the next micro-batch boundary."""
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        """Let a paused run continue."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self) -> None:
        """Ask the run to stop (works while running and while paused)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        """True while a pause is requested and not yet resumed."""
        return self._paused

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._cancelled

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block (without spinning) while paused; return True when cancelled.

        ``timeout`` bounds the wait; the caller loops if it wants to wake periodically.
        """
        with self._cond:
            if self._paused and not self._cancelled:
                self._cond.wait_for(lambda: not self._paused or self._cancelled, timeout)
            return self._cancelled
