"""Application entry point: ``senior-intern-gui`` and ``python -m senior_intern``.

Shows the window before anything heavy is imported: torch and transformers load later, on
background threads, when a model, a dataset or a run needs them.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys

import pyqtgraph as pg
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from senior_intern import __version__
from senior_intern.gui import platform_check
from senior_intern.gui.settings import APPLICATION, ORGANIZATION


def app_icon() -> QIcon:
    """The application icon (SVG when Qt can draw it, the 256 px PNG as well)."""
    icon = QIcon()
    folder = importlib.resources.files("senior_intern.resources")
    for name in ("icon.svg", "icon.png"):
        resource = folder / name
        if resource.is_file():
            icon.addFile(str(resource))
    return icon


def create_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (the existing one, if any) with name, icon and chart defaults set."""
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName(APPLICATION)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("senior-intern")
    app.setWindowIcon(app_icon())
    pg.setConfigOptions(antialias=True)
    return app


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of the GUI."""
    parser = argparse.ArgumentParser(prog="senior-intern-gui", description="Senior Intern: local LoRA fine-tuning.")
    parser.add_argument("paths", nargs="*", help="a base model (.gguf or folder), a dataset (file or folder) or a job file (.toml) to open")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Open the main window; returns the exit code of the event loop (1, with a message saying
    what to install, when Qt could not open a window here)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if QApplication.instance() is None:
        problem = platform_check.find_problem()
        if problem:
            print(problem, file=sys.stderr)
            return 1
    app = create_application([sys.argv[0]])
    from senior_intern.gui.main_window import MainWindow

    window = MainWindow()
    window.show()
    if args.paths:
        window.open_paths(args.paths)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
