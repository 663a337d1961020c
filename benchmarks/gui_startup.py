"""Time from launching the app to its window on screen, and whether torch was needed for it.

Each run starts a fresh interpreter (as a user's launch does), builds the main window as
``senior_intern.gui.app.main`` does, and reports when the event loop has shown it; the time
counts from just before the interpreter starts. Runs in a temporary SENIOR_INTERN_HOME, so no
settings or data of the user are read or changed.

    .venv/bin/python benchmarks/gui_startup.py [--runs 5]

Prints one line per run and a summary line ``time-to-window: <median> s``. The window itself
needs neither torch nor transformers (tests/gui/test_app.py checks the imports); the model
details the Train page starts reading right away may import transformers on a background
thread while the window appears, which each line reports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys, time
from senior_intern.gui.app import create_application
app = create_application([sys.argv[0]])
from PySide6.QtCore import QTimer
from senior_intern.gui.main_window import MainWindow
window = MainWindow()
window.show()

def report():
    heavy = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')})
    print(json.dumps({"shown_at": time.time(), "heavy_modules": heavy}), flush=True)
    os._exit(0)  # do not wait for the background work the window started

QTimer.singleShot(0, report)
app.exec()
"""


def one_run(home: str) -> dict:
    """Launch the app once; return {'seconds': ..., 'heavy_modules': [...]}."""
    env = dict(os.environ, SENIOR_INTERN_HOME=home)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    started = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"the app did not start (exit {out.returncode}):\n{out.stderr[-2000:]}")
    report = json.loads(lines[-1])
    return {"seconds": report["shown_at"] - started, "heavy_modules": report["heavy_modules"]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="launches to time (default 5)")
    args = parser.parse_args(argv)
    times = []
    with tempfile.TemporaryDirectory(prefix="si-gui-bench-") as home:
        for i in range(args.runs):
            result = one_run(home)
            times.append(result["seconds"])
            heavy = ", ".join(result["heavy_modules"]) or "none"
            print(f"run {i + 1}: window shown after {result['seconds']:.2f} s "
                  f"(already imported by then, background threads included: {heavy})")
    print(f"time-to-window: {statistics.median(times):.2f} s (median of {len(times)}, best {min(times):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
