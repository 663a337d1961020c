"""Screenshots of every page of the app, with a real training run in progress on the Run page.

Drives the real window on the current X display (run it under Xvfb on a headless machine):

    Xvfb :99 -screen 0 1600x1000x24 &  DISPLAY=:99 .venv/bin/python packaging/screenshots.py

Uses the embedded demo model and sample dataset by default (``--model`` / ``--dataset`` to
change), a temporary SENIOR_INTERN_HOME (nothing of the user's is read or changed), and writes
``train.png``, ``run.png``, ``adapters.png`` and ``playground.png`` into ``packaging/out/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "packaging" / "out"


def wait_until(app, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the event loop until ``condition()`` holds; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        app.processEvents()
        time.sleep(0.02)


def settle(app, seconds: float) -> None:
    """Let the window redraw for a moment."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def shoot(app, window, name: str, out: Path = OUT) -> Path:
    """Save the window as ``<out>/<name>.png`` (default ``packaging/out``)."""
    settle(app, 0.8)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    if not window.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"wrote {path}")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="base model (default: the embedded demo model)")
    parser.add_argument("--dataset", help="dataset (default: the bundled sample dataset)")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of the run (default 24)")
    parser.add_argument("--shoot-at", type=int, default=8, help="step at which the Run page is captured (default 8)")
    parser.add_argument("--size", default="1440x920", help="window size, WIDTHxHEIGHT (default 1440x920)")
    parser.add_argument("--out", default=str(OUT), help=f"folder for the PNGs (default {OUT.relative_to(ROOT)})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Take the four screenshots; returns 0."""
    args = parse_args(argv)
    out = Path(args.out)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        print("No display: run under Xvfb (see the docstring); falling back to Qt's offscreen platform.", file=sys.stderr)
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = tempfile.mkdtemp(prefix="si-screenshots-")
    os.environ["SENIOR_INTERN_HOME"] = home

    from senior_intern.defaults import default_job
    from senior_intern.gui.app import create_application
    from senior_intern.gui.main_window import ADAPTERS, PLAYGROUND, RUN, TRAIN, MainWindow
    from senior_intern.gui.settings import AppSettings

    app = create_application([sys.argv[0]])
    settings = AppSettings(Path(home) / "gui.ini")
    job = default_job("quick", name="python-helper")
    job.description = "Answers Python questions the way our team writes code."
    job.base_model_path = args.model or job.base_model_path
    job.dataset_path = args.dataset or job.dataset_path
    t = job.training
    t.max_steps, t.eval_every, t.save_every, t.warmup_steps = args.steps, max(2, args.steps // 4), args.steps, 2
    settings.set_last_job(job)
    window = MainWindow(settings)
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()

    train = window.train_page
    window.show_page(TRAIN)
    wait_until(app, lambda: train.analysis is not None or not train.dataset_panel.error.isHidden(), 300, "the dataset analysis")
    wait_until(app, lambda: not train.model_busy.isVisible(), 120, "the model details")
    shoot(app, window, "train", out)

    run = window.run_page
    train.start()
    window.show_page(RUN)
    wait_until(app, lambda: run.progress_events >= args.shoot_at or run.result is not None, 1800, f"step {args.shoot_at}")
    wait_until(app, lambda: run.last_validation is not None or run.result is not None, 600, "a validation pass")
    shoot(app, window, "run", out)

    wait_until(app, lambda: run.result is not None, 3600, "the end of the run")
    if run.result.adapter_id is None:
        raise RuntimeError(f"the run ended without an adapter: {run.summary_label.text()}")
    library = window.adapters_page
    window.show_page(ADAPTERS)
    wait_until(app, lambda: library.selected_id() == run.result.adapter_id, 120, "the adapter in the library")
    wait_until(app, lambda: library.curve.drawn_count("loss") > 0, 60, "the adapter's loss curve")
    shoot(app, window, "adapters", out)

    playground = window.playground_page
    window.show_page(PLAYGROUND)
    playground.open_adapter(run.result.adapter_id)
    playground.max_tokens.setValue(48)
    playground.prompt.setPlainText("How do I read a JSON file in Python?")
    playground.generate()
    wait_until(app, lambda: not playground.running, 900, "the playground answers")
    shoot(app, window, "playground", out)
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
