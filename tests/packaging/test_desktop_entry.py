"""The Linux desktop entry: valid, matching the app's window, installed and removed by make.

``make install-desktop`` / ``make uninstall-desktop`` run here against a temporary
XDG_DATA_HOME, so nothing of the user's desktop is touched.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "packaging" / "senior-intern.desktop"
SCRIPT = ROOT / "packaging" / "install_desktop.sh"
VENV = Path(sys.executable).parent.parent
GUI_LAUNCHER = VENV / "bin" / "senior-intern-gui"
INSTALLED = ("applications/senior-intern.desktop", "icons/hicolor/256x256/apps/senior-intern.png",
             "icons/hicolor/scalable/apps/senior-intern.svg")

needs_validator = pytest.mark.skipif(
    shutil.which("desktop-file-validate") is None,
    reason="desktop-file-validate is not installed (Debian/Ubuntu package desktop-file-utils; make test installs it)",
)
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def read_entry(path: Path) -> dict[str, str]:
    """The [Desktop Entry] group of a desktop file as a dict (keys keep their case)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def validate(path: Path) -> None:
    """Assert desktop-file-validate accepts ``path`` with no error and no warning (hints are fine)."""
    out = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True, timeout=30)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if ": error:" in line or ": warning:" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def make(target: str, data_home: Path) -> subprocess.CompletedProcess:
    """``make <target>`` for this environment with XDG_DATA_HOME=data_home.

    ``-o`` marks the install stamp as up to date: the suite already runs from an installed
    environment, and make must not reinstall it because the Makefile is newer.
    """
    env = dict(os.environ, XDG_DATA_HOME=str(data_home))
    env.pop("DESTDIR", None)
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-o", str(VENV / ".senior-intern-installed"),
                           f"VENV={VENV}", target], capture_output=True, text=True, env=env, timeout=120)


def install_script(*args: str, data_home: Path, destdir: str | None = None) -> subprocess.CompletedProcess:
    """Run packaging/install_desktop.sh with the given arguments."""
    env = dict(os.environ, XDG_DATA_HOME=str(data_home))
    env.pop("DESTDIR", None)
    if destdir is not None:
        env["DESTDIR"] = destdir
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder``, as paths relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@needs_validator
def test_the_desktop_entry_validates() -> None:
    validate(ENTRY)


def test_the_entry_describes_a_graphical_app_launched_with_files() -> None:
    entry = read_entry(ENTRY)
    assert entry["Type"] == "Application" and entry["Terminal"] == "false"
    assert entry["Name"] == "Senior Intern" and entry["GenericName"] and entry["Comment"]
    assert entry["Exec"] == "senior-intern-gui %F" and entry["TryExec"] == "senior-intern-gui"
    assert entry["Icon"] == "senior-intern"
    assert "Development" in entry["Categories"].split(";")


def test_the_entry_matches_the_window_the_app_opens(qapp) -> None:
    from senior_intern.gui.app import create_application

    app = create_application()
    # X11 desktops match StartupWMClass against the class part of WM_CLASS (Qt uses the
    # application name); Wayland ones match the app id (the desktop file name) to the entry's name.
    assert read_entry(ENTRY)["StartupWMClass"] == app.applicationName()
    assert app.desktopFileName() == ENTRY.stem


@needs_make
def test_make_installs_the_entry_and_icons_and_uninstall_removes_exactly_them(tmp_path: Path) -> None:
    data_home = tmp_path / "share"
    (data_home / "applications").mkdir(parents=True)
    (data_home / "applications" / "other.desktop").write_text("[Desktop Entry]\nType=Application\nName=Other\nExec=other\n")
    before = files_under(data_home)

    out = make("install-desktop", data_home)
    assert out.returncode == 0, out.stdout + out.stderr
    assert files_under(data_home) == before | set(INSTALLED)
    installed = read_entry(data_home / INSTALLED[0])
    assert installed["Exec"] == f"{GUI_LAUNCHER} %F" and installed["TryExec"] == str(GUI_LAUNCHER)
    assert {k: v for k, v in installed.items() if k not in ("Exec", "TryExec")} == \
        {k: v for k, v in read_entry(ENTRY).items() if k not in ("Exec", "TryExec")}
    assert (data_home / INSTALLED[1]).read_bytes() == (ROOT / "resources" / "icon.png").read_bytes()
    assert (data_home / INSTALLED[2]).read_bytes() == (ROOT / "resources" / "icon.svg").read_bytes()
    if shutil.which("desktop-file-validate"):
        validate(data_home / INSTALLED[0])

    first = (data_home / INSTALLED[0]).read_bytes()
    again = make("install-desktop", data_home)  # idempotent: same files, nothing added
    assert again.returncode == 0, again.stderr
    assert files_under(data_home) == before | set(INSTALLED) and (data_home / INSTALLED[0]).read_bytes() == first

    out = make("uninstall-desktop", data_home)
    assert out.returncode == 0, out.stdout + out.stderr
    assert files_under(data_home) == before
    assert make("uninstall-desktop", data_home).returncode == 0  # nothing left to remove is not an error


def test_destdir_stages_the_files_for_a_package(tmp_path: Path) -> None:
    out = install_script("install", str(GUI_LAUNCHER), data_home=Path("/usr/share"), destdir=str(tmp_path / "stage"))
    assert out.returncode == 0, out.stderr
    assert files_under(tmp_path / "stage") == {f"usr/share/{p}" for p in INSTALLED}
    out = install_script("uninstall", data_home=Path("/usr/share"), destdir=str(tmp_path / "stage"))
    assert out.returncode == 0 and files_under(tmp_path / "stage") == set(), out.stderr


def test_a_launcher_path_with_spaces_is_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "my apps"
    folder.mkdir()
    (folder / "senior-intern-gui").symlink_to(GUI_LAUNCHER)
    out = install_script("install", str(folder / "senior-intern-gui"), data_home=tmp_path / "share")
    assert out.returncode == 0, out.stderr
    entry_file = tmp_path / "share" / INSTALLED[0]
    entry = read_entry(entry_file)
    assert entry["Exec"] == f'"{folder}/senior-intern-gui" %F' and entry["TryExec"] == f"{folder}/senior-intern-gui"
    if shutil.which("desktop-file-validate"):
        validate(entry_file)


@pytest.mark.parametrize("launcher", ["relative/senior-intern-gui", "/nowhere/bin/senior-intern-gui"])
def test_a_bad_launcher_is_refused_before_anything_is_written(tmp_path: Path, launcher: str) -> None:
    out = install_script("install", launcher, data_home=tmp_path / "share")
    assert out.returncode != 0 and launcher in out.stderr
    assert not (tmp_path / "share").exists()


@pytest.mark.skipif(shutil.which("gtk-update-icon-cache") is None, reason="gtk-update-icon-cache is not installed")
def test_an_icon_theme_with_an_index_gets_its_cache_refreshed(tmp_path: Path) -> None:
    theme = tmp_path / "share" / "icons" / "hicolor"
    theme.mkdir(parents=True)
    (theme / "index.theme").write_text(
        "[Icon Theme]\nName=Hicolor\nComment=Fallback\nDirectories=256x256/apps,scalable/apps\n\n"
        "[256x256/apps]\nSize=256\nContext=Applications\nType=Threshold\n\n"
        "[scalable/apps]\nSize=128\nMinSize=8\nMaxSize=512\nContext=Applications\nType=Scalable\n"
    )
    out = install_script("install", str(GUI_LAUNCHER), data_home=tmp_path / "share")
    assert out.returncode == 0, out.stderr
    cache = theme / "icon-theme.cache"
    assert cache.is_file() and b"senior-intern" in cache.read_bytes()
