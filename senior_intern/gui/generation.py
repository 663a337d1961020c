"""The playground's generation off the GUI thread: ``ModelCache`` keeps the last loaded base model
and adapter; ``GenerationWorker`` (a QObject moved to a QThread) loads or reuses it and streams
both answers as signals, a token each in turn, polling Stop between tokens.
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from senior_intern.gui.tasks import TaskCancelled
from senior_intern.gui.threads import prepare_background_thread


class ModelCache:
    """The last loaded playground (base model + adapter), reused while the choice is the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str | None] | None = None
        self._value: Any = None

    def holds(self, base: str, adapter: str | None) -> bool:
        """True when (base, adapter) is the loaded one (no loading needed)."""
        return self._key == (base, adapter)

    def get(self, base: str, adapter: str | None, progress: Any = None) -> Any:
        """The playground for (base, adapter), loading it when it is not the cached one (``progress(done, total)``)."""
        with self._lock:
            if self._key != (base, adapter):
                from senior_intern.adapters.generate import load_for_playground

                self._value, self._key = None, None  # free the old model before loading a new one
                self._value = load_for_playground(base, adapter, progress=progress)
                self._key = (base, adapter)
            return self._value


class GenerationWorker(QObject):
    """Generates the base model's and the adapter's answers together, in its own thread."""

    status = Signal(str)
    token = Signal(str, str)  # side ("base" | "adapter"), text piece
    side_done = Signal(str, object)  # side, GenerationResult
    loading = Signal(int, int)  # tensors read, total
    finished = Signal()
    failed = Signal(object)

    def __init__(self, cache: ModelCache, base: str, adapter_dir: str | None, prompt: str, options: dict[str, Any]) -> None:
        super().__init__()
        self.cache, self.base, self.adapter_dir = cache, base, adapter_dir
        self.prompt, self.options = prompt, options
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the generation to stop after the current token (thread-safe)."""
        self._stop.set()

    @Slot()
    def run(self) -> None:
        """Load (or reuse) the model and stream both answers at once."""
        prepare_background_thread()
        try:
            self.status.emit("Loading the model…")
            playground = self.cache.get(self.base, self.adapter_dir, self._loading)
            sides = {"base": False, **({"adapter": True} if self.adapter_dir else {})}
            self.status.emit("Generating both answers…" if self.adapter_dir else "Generating…")
            playground.generate_together(self.prompt, sides, on_token=self.token.emit, on_done=self.side_done.emit,
                                         should_stop=self._stop.is_set, **self.options)
        except TaskCancelled:  # stopped while the model was loading
            pass
        except Exception as exc:  # shown as a readable message in the page
            self.failed.emit(exc)
            return
        self.finished.emit()

    def _loading(self, done: int, total: int) -> None:
        self.loading.emit(done, total)
        if self._stop.is_set():
            raise TaskCancelled("Loading was stopped")
