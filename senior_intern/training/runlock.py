"""One process per run folder: an exclusive lock on ``<run>/.lock`` and the finished marker.

Two ``resume RUN`` at once would both append to ``metrics.jsonl`` and both save an adapter. The
lock is an OS file lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), so it is
released by the kernel when its process dies, even by ``kill -9``: a stale lock file never
blocks a later resume. The file holds the owner's pid so the refusal can name it.

``finished.json`` is written into the run folder when the run's adapter is in the library;
resuming such a run is refused with the adapter's id instead of training a duplicate.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"
FINISHED_FILE = "finished.json"

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class RunInUseError(ValueError):
    """Another process holds the run folder's lock."""


class RunFinishedError(ValueError):
    """The run already ended with an adapter in the library; there is nothing to resume."""


class RunLock:
    """An exclusive lock on one run folder, held until ``release()`` (or the process ends)."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: str | Path) -> "RunLock":
        """Take the lock or raise ``RunInUseError`` naming the process that holds it."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            try:
                owner = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunInUseError(
                f"Run {run_dir} is in use by pid {owner}; wait for that run to end (or stop that process) and try again"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode("ascii"))
        return cls(run_dir, fd)

    @property
    def held(self) -> bool:
        """True until released."""
        return self._fd is not None

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)


def mark_finished(run_dir: str | Path, adapter_id: str, adapter_path: str, status: str) -> Path:
    """Record in the run folder that its adapter is saved (written whole, then renamed)."""
    run_dir = Path(run_dir)
    target = run_dir / FINISHED_FILE
    tmp = run_dir / f".{FINISHED_FILE}.tmp"
    record = {"adapter_id": adapter_id, "adapter_path": adapter_path, "status": status, "finished_at": time.time()}
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, target)
    return target


def finished_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's finished record, or None while it has not finished (or the record is unreadable)."""
    path = Path(run_dir) / FINISHED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def refuse_if_finished(run_dir: str | Path) -> None:
    """Raise ``RunFinishedError`` when the run already saved its adapter."""
    record = finished_record(run_dir)
    if record is not None:
        raise RunFinishedError(
            f"Run {run_dir} is already finished ({record.get('status', 'Completed')}): its adapter is "
            f"{record.get('adapter_id')} at {record.get('adapter_path')}. Nothing to resume; start a new run to train more."
        )
