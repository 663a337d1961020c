"""The PyInstaller bundle's pieces that can be checked without building it.

Building takes minutes and about 1 GB, so it is not part of the suite: packaging/check_bundle.sh
builds the bundle and runs its executables (see packaging/README.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from senior_intern import __version__

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def load_bundle_entry():
    """packaging/bundle_entry.py as a module (it is a script of the bundle, not of the package)."""
    spec = importlib.util.spec_from_file_location("bundle_entry", ROOT / "packaging" / "bundle_entry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("executable", ["senior-intern", "senior-intern-gui", "senior-intern-gui.exe", "senior-intern.exe"])
def test_the_executable_name_picks_the_app_or_the_cli(executable: str, monkeypatch, capsys) -> None:
    entry = load_bundle_entry()
    monkeypatch.setattr(sys, "executable", str(Path("/opt/senior-intern") / executable))
    monkeypatch.setattr(sys, "argv", [executable, "--version"])
    with pytest.raises(SystemExit) as exit_info:  # argparse's --version ends the program
        entry.main()
    assert exit_info.value.code == 0
    expected = "senior-intern-gui" if "gui" in executable else "senior-intern"
    assert capsys.readouterr().out.strip() == f"{expected} {__version__}"


def test_the_cli_entry_returns_the_command_exit_code(monkeypatch, tmp_path: Path, capsys) -> None:
    entry = load_bundle_entry()
    monkeypatch.setattr(sys, "executable", "/opt/senior-intern/senior-intern")
    monkeypatch.setattr(sys, "argv", ["senior-intern", "validate", str(tmp_path / "missing.toml")])
    assert entry.main() == 2
    assert "missing.toml" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.parametrize(("setting", "value"), [(None, "1"), ("0", "0")])
def test_make_bundle_passes_the_demo_choice_to_the_spec(setting: str | None, value: str) -> None:
    args = ["make", "-n", "--no-print-directory", "-C", str(ROOT), "-o", str(VENV / ".senior-intern-installed"),
            f"VENV={VENV}", "bundle"] + ([f"BUNDLE_DEMO={setting}"] if setting is not None else [])
    env = {k: v for k, v in os.environ.items() if k != "BUNDLE_DEMO"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    build = next(line for line in out.stdout.splitlines() if "PyInstaller" in line and "pip" not in line)
    assert build.startswith(f"SENIOR_INTERN_BUNDLE_DEMO={value} ") and "packaging/senior_intern.spec" in out.stdout
