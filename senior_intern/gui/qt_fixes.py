"""Work-arounds for bugs in the installed Qt bindings, applied once when ``senior_intern.gui`` loads.

PySide6 6.12.0 on CPython < 3.12: ``SignalInstance.emit()`` returns ``True`` without taking a
reference to it, so every emit from Python (ours and pyqtgraph's) lowers the reference count of
``True`` by one; after a few hundred emits the interpreter aborts ("bool_dealloc: deallocating
True or False"). ``install()`` probes for that behaviour and, only when it is present, wraps
``emit`` to add back the missing reference. From CPython 3.12 ``True`` is immortal and the probe
finds nothing to fix.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal, SignalInstance

_installed = False


class _Probe(QObject):
    ping = Signal(object)


def emit_loses_reference() -> bool:
    """True when ``emit()`` drops a reference to ``True`` (the PySide6 6.12.0 bug)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(4):
        probe.ping.emit(None)
    return sys.getrefcount(True) < before


def install() -> bool:
    """Apply the work-around when the bug is present; True when it was (or already is) applied."""
    global _installed
    if _installed:
        return True
    if not emit_loses_reference():
        return False
    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None

    def emit(self, *args):
        result = original(self, *args)
        if result is True or result is False:  # both singletons come back without a reference
            incref(result)
        return result

    emit.__doc__ = original.__doc__
    SignalInstance.emit = emit
    _installed = True
    return True
