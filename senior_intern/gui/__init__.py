"""senior_intern.gui: the PySide6 desktop app (pages, worker thread, charts).

Importing the package applies the work-arounds for known bugs of the Qt bindings
(``qt_fixes``) before any signal is emitted.
"""

from senior_intern.gui import qt_fixes

qt_fixes.install()
