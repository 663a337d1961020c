"""Work-around for a reference-counting bug of the installed Qt bindings, applied when ``senior_intern.gui`` loads.

The PySide6 6.12.0 wheels (tagged ``cp310-abi3``) are built against the CPython 3.12 limited
API, where ``None``, ``True`` and ``False`` are immortal and ``Py_RETURN_NONE`` /
``Py_RETURN_TRUE`` return them *without* taking a reference. On CPython 3.10/3.11 they are
not immortal, so every call of a void Qt method (``label.setText()``, ``painter.setPen()``...)
and every ``Signal.emit()`` lowers the reference count of ``None`` / ``True`` by one, and after a
few thousand calls the interpreter aborts ("none_dealloc: deallocating None").

``install()`` checks for that behaviour and, only when it is present, adds 2**40 references to
each of the three singletons, which makes them as good as immortal for the life of the process
(the same thing CPython 3.12 does by design). On a correct build, or on CPython >= 3.12, the probe
finds nothing and nothing is changed.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

PIN = 1 << 40
_installed = False


class _Probe(QObject):
    ping = Signal(object)


def calls_lose_references() -> bool:
    """True when void Qt calls or signal emits drop a reference to ``None`` / ``True``."""
    probe = _Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(8):
        probe.setObjectName("probe")
        probe.ping.emit(0)
    return sys.getrefcount(None) < none_before or sys.getrefcount(True) < true_before


def _add_references(obj: object, count: int) -> None:
    """Raise ``obj``'s reference count by ``count`` (``ob_refcnt`` is the first field of every object)."""
    refcnt = ctypes.c_ssize_t.from_address(id(obj))
    refcnt.value += count


def install() -> bool:
    """Apply the work-around when the bug is present; True when it is applied."""
    global _installed
    if _installed:
        return True
    if sys.version_info >= (3, 12) or not calls_lose_references():
        return False
    for singleton in (None, True, False):
        _add_references(singleton, PIN)
    _installed = True
    return True
