"""The installed launchers start: ``senior-intern`` (CLI), ``senior-intern-gui`` (the app), ``python -m``.

These run the console scripts pip wrote into the environment's ``bin`` folder, as a user or a
desktop entry does, in separate processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from senior_intern import __version__
from tests.conftest import write_dataset

BIN = Path(sys.executable).parent
COMMANDS = ("train", "resume", "validate", "model", "dataset", "adapters", "hardware")
GUI_ALIVE_SECONDS = 5.0


def launcher(name: str) -> Path:
    """The installed console script ``name``; fails with what to run when it is missing."""
    path = BIN / name
    assert path.is_file() and os.access(path, os.X_OK), f"{path} is not installed: run 'make install' (pip install -e .)"
    return path


REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command with its own SENIOR_INTERN_HOME under ``tmp_path``, importing this checkout."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, SENIOR_INTERN_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen", PYTHONPATH=path)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_cli_help_lists_every_command(tmp_path: Path) -> None:
    out = run([str(launcher("senior-intern")), "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert set(COMMANDS) <= listed, out.stdout


def test_both_launchers_report_the_package_version(tmp_path: Path) -> None:
    for name in ("senior-intern", "senior-intern-gui"):
        out = run([str(launcher(name)), "--version"], tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{name} {__version__}"


def test_python_dash_m_runs_the_app_and_the_cli(tmp_path: Path) -> None:
    app = run([sys.executable, "-m", "senior_intern", "--version"], tmp_path)
    assert app.returncode == 0 and app.stdout.strip() == f"senior-intern-gui {__version__}", app.stderr
    cli = run([sys.executable, "-m", "senior_intern.cli", "--help"], tmp_path)
    assert cli.returncode == 0 and "usage: senior-intern" in cli.stdout, cli.stderr


def test_python_dash_m_senior_intern_with_a_sub_command_runs_the_cli(tmp_path: Path) -> None:
    out = run([sys.executable, "-m", "senior_intern", "train", "--help"], tmp_path)
    assert out.returncode == 0 and "usage: senior-intern train" in out.stdout, out.stderr
    assert "senior-intern-gui" not in out.stdout + out.stderr
    bad = run([sys.executable, "-m", "senior_intern", "validate", "missing.toml"], tmp_path)
    assert bad.returncode == 2 and "error:" in bad.stderr and "unrecognized arguments" not in bad.stderr, bad.stderr


def test_cli_trains_the_tiny_model_through_the_console_script(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = run([
        str(launcher("senior-intern")), "train", "--model", str(tiny_model_dir),
        "--data", str(write_dataset(tmp_path / "d.jsonl")), "--output", str(tmp_path / "runs"),
        "--adapters-dir", str(tmp_path / "lib"), "--name", "script", "--epochs", "1", "--batch-size", "4",
        "--max-seq-length", "64", "--rank", "4", "--alpha", "8", "--learning-rate", "5e-3", "--warmup-steps", "1",
        "--device", "cpu", "--dtype", "float32", "--no-packing", "--eval-every", "0", "--save-every", "0",
        "--target-modules", "q_proj", "v_proj",
    ], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Status: Completed" in out.stdout
    adapters = list((tmp_path / "lib").glob("script-*/adapter_model.safetensors"))
    assert len(adapters) == 1, out.stdout


def test_gui_launcher_opens_its_window_and_stays_up(tmp_path: Path) -> None:
    env = dict(os.environ, SENIOR_INTERN_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    stderr_path = tmp_path / "gui.err"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen([str(launcher("senior-intern-gui"))], env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + GUI_ALIVE_SECONDS
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.1)
            exit_code = process.poll()
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    errors = stderr_path.read_text()
    assert exit_code is None, f"senior-intern-gui exited with {exit_code} within {GUI_ALIVE_SECONDS} s:\n{errors}"
    assert "Traceback" not in errors, errors

