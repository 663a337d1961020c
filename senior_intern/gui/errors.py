"""Readable error messages: what went wrong and what to do, never a traceback.

Errors reach the GUI thread as exception objects (from the training worker and from background
tasks); ``describe_error`` turns one into the text a dialog, the log or a status line shows.
"""

from __future__ import annotations

_OOM_WORDS = ("out of memory", "cannot allocate memory", "can't allocate memory")


def describe_error(exc: BaseException) -> str:
    """One or two sentences for the user: the problem, then what to do about it."""
    text = str(exc).strip() or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, MemoryError) or any(w in lowered for w in _OOM_WORDS):
        return f"{text}\nLower the batch size or the max sequence length and try again."
    if isinstance(exc, FileNotFoundError):
        return f"{text}\nCheck the path (it may have been moved or deleted) and choose it again."
    if isinstance(exc, PermissionError):
        return f"{text}\nChoose a folder you can write to, or fix its permissions."
    if isinstance(exc, FileExistsError):
        return f"{text}\nChoose another name or remove the existing one first."
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        return f"A part of Senior Intern is missing: {text}\nReinstall the application (make install)."
    if isinstance(exc, ValueError):
        return text  # our ValueErrors already say what to fix
    if isinstance(exc, OSError):
        return f"{text}\nCheck the disk (free space, permissions) and try again."
    return f"Unexpected error ({type(exc).__name__}): {text}\nThe log has the details; please report it if it persists."
