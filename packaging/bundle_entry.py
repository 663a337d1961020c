"""Entry point of the bundled executables (PyInstaller, see ``senior_intern.spec``).

Both executables of the bundle run this one script, so the app is analysed and packed once:
``senior-intern-gui`` opens the desktop app, ``senior-intern`` is the command line. The name
the bundle's executable was started under picks which.
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

GUI_NAMES = ("senior-intern-gui",)


def main() -> int:
    """Run the app or the command line, by the executable's name; returns the exit code."""
    # A frozen executable that starts worker processes (spawn on Windows and macOS) must hand
    # them their job before doing anything else.
    multiprocessing.freeze_support()
    if Path(sys.executable).stem in GUI_NAMES:
        from senior_intern.gui.app import main as gui_main

        return gui_main()
    from senior_intern.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
