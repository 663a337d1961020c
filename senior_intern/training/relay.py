"""Events and control between a data-parallel run's processes and the app that started it.

When the app (``gui/worker.py``) trains with more than one process, the run happens in
``senior-intern train --nproc-per-node N``: the launcher and its ranks are other processes.
Two files, named by environment variables the app sets, connect them (no sockets, no torch
here, so the GUI imports this without loading the engine):

- ``SENIOR_INTERN_EVENTS``: rank 0 appends every engine event (the ``training/events.py``
  dataclasses) and, at the end, its ``TrainingResult`` as one JSON line each (``EventWriter``);
  the app reads what was appended since its last look (``EventReader``, never blocks).
- ``SENIOR_INTERN_CONTROL``: the app writes ``{"paused": .., "cancelled": ..}`` atomically
  (``write_control``); rank 0 reads it at its ``check_control`` points (``FileControl``, a
  ``TrainingControl``). The ranks all-reduce rank 0's answer there
  (``DataParallel.check_control``), so every rank pauses or stops at the same micro-batch.

Records are ``{"type": <class name>, "data": {field: value}}``; ``decode`` rebuilds the
dataclass from its type hints (enums, nested dataclasses, tuples, ``X | None``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import time
import types
import typing
from pathlib import Path
from typing import Any

from senior_intern.config import to_plain
from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import Evaluated, LogLevel, LogMessage, ModelOpening, Progress, StateChanged, WorldInfo
from senior_intern.training.result import TrainingResult

EVENTS_ENV = "SENIOR_INTERN_EVENTS"
CONTROL_ENV = "SENIOR_INTERN_CONTROL"

RECORD_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    StateChanged, Progress, Evaluated, LogMessage, ModelOpening, WorldInfo, TrainingResult, HardwareMetrics, GpuMetrics)}


# --- encoding --------------------------------------------------------------------------------
def encode(obj: Any) -> Any:
    """``obj`` as plain JSON values (``config.to_plain``, None fields kept)."""
    return to_plain(obj, omit_none=False)


def decode(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from ``encode``'s output."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return decode(inner[0], data) if len(inner) == 1 else data
    if origin in (list, tuple):
        item = args[0] if args else Any
        values = [decode(item, v) for v in data]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        return dict(data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: decode(hints[k], v) for k, v in data.items() if k in names})
    return data


def record(obj: Any) -> str:
    """One JSON line for an event or result."""
    return json.dumps({"type": type(obj).__name__, "data": encode(obj)}, allow_nan=True)


def parse_record(line: str) -> Any:
    """The event or result of one line; ``ValueError`` for a line that is not a known record."""
    try:
        raw = json.loads(line)
        cls = RECORD_TYPES[raw["type"]]
        return decode(cls, raw["data"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an event record: {line[:200]!r} ({exc})") from exc


# --- rank 0 -> the app ---------------------------------------------------------------------------
class EventWriter:
    """Appends events to the events file, one flushed line each (rank 0 only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")

    @classmethod
    def from_env(cls) -> "EventWriter | None":
        """The writer for ``$SENIOR_INTERN_EVENTS``, or None when it is not set."""
        path = os.environ.get(EVENTS_ENV)
        return cls(path) if path else None

    def __call__(self, event: Any) -> None:
        """Write one event (or the final ``TrainingResult``)."""
        self._file.write(record(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class EventReader:
    """Reads the records appended to the events file since the last call; never blocks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = None
        self._partial = b""

    def read(self) -> list[Any]:
        """The complete new records (a half-written last line waits for the next call; a line
        that is no record comes back as a warning ``LogMessage``)."""
        if self._file is None:
            if not self.path.exists():
                return []
            self._file = self.path.open("rb")
        chunk = self._file.read()
        if not chunk:
            return []
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        out: list[Any] = []
        for line in lines:
            if line.strip():
                try:
                    out.append(parse_record(line.decode("utf-8", errors="replace")))
                except ValueError as exc:  # reported, and the run goes on
                    out.append(LogMessage(LogLevel.WARNING, f"Skipped an unreadable event from the training processes: {exc}"))
        return out

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


# --- the app -> the ranks ---------------------------------------------------------------------
def write_control(path: str | Path, paused: bool, cancelled: bool) -> None:
    """Write the control file atomically (the ranks never see half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"paused": bool(paused), "cancelled": bool(cancelled)}), encoding="utf-8")
    os.replace(tmp, path)


def read_control(path: str | Path) -> tuple[bool, bool] | None:
    """``(paused, cancelled)`` from the control file; None when it is missing or unreadable."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return bool(raw.get("paused")), bool(raw.get("cancelled"))
    except (OSError, ValueError, AttributeError):
        return None


class FileControl(TrainingControl):
    """A ``TrainingControl`` that also obeys the control file (rank 0 of a run the app started).

    Local requests (Ctrl-C, SIGTERM) still work; a cancel from either side is final.
    """

    POLL_SECONDS = 0.2

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file_paused = False
        self._file_cancelled = False

    @classmethod
    def from_env(cls) -> "FileControl | None":
        """The control for ``$SENIOR_INTERN_CONTROL``, or None when it is not set."""
        path = os.environ.get(CONTROL_ENV)
        return cls(path) if path else None

    def _poll(self) -> None:
        state = read_control(self.path)
        if state is not None:
            self._file_paused, cancelled = state
            self._file_cancelled = self._file_cancelled or cancelled

    @property
    def paused(self) -> bool:
        """True while the file or a local request asks for a pause."""
        self._poll()
        return self._file_paused or super().paused

    @property
    def cancelled(self) -> bool:
        """True once the file or a local request cancelled the run."""
        self._poll()
        return self._file_cancelled or super().cancelled

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Wait (polling the file) while paused, at most ``timeout`` seconds; True when cancelled."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.paused and not self.cancelled:
            left = self.POLL_SECONDS if end is None else min(self.POLL_SECONDS, end - time.monotonic())
            if left <= 0:
                break
            with self._cond:  # wakes at once on a local request
                self._cond.wait(left)
        return self.cancelled
