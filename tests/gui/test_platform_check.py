"""The launcher without Qt's system libraries: a message that names the fix, not Qt's raw abort."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from senior_intern.gui import app, platform_check
from senior_intern.gui.platform_check import XCB_LIBRARIES, find_problem, wanted_platform

ROOT = Path(__file__).resolve().parents[2]
X11 = {"DISPLAY": ":0"}


def test_missing_xcb_libraries_are_named_with_their_packages_and_the_fix():
    missing = {"libxcb-cursor.so.0", "libxcb-icccm.so.4"}
    problem = find_problem([], X11, "linux", loader=lambda soname: soname not in missing)
    assert problem is not None
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4" in problem
    assert "make system-deps-gui" in problem and "packaging/system_deps.sh gui" in problem
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4" in problem
    assert "could not load the Qt platform plugin" not in problem


def test_no_problem_when_everything_loads_or_another_platform_is_used():
    loads = lambda soname: True  # noqa: E731
    fails = lambda soname: False  # noqa: E731
    assert find_problem([], X11, "linux", loader=loads) is None
    assert find_problem([], {"QT_QPA_PLATFORM": "offscreen"}, "linux", loader=fails) is None
    assert find_problem(["app", "-platform", "wayland"], X11, "linux", loader=fails) is None
    assert find_problem([], {"WAYLAND_DISPLAY": "wayland-0"}, "linux", loader=fails) is None
    assert find_problem([], X11, "win32", loader=fails) is None
    assert find_problem([], {**X11, "SENIOR_INTERN_SKIP_QT_CHECK": "1"}, "linux", loader=fails) is None
    assert wanted_platform(["app", "-platform", "vnc"], {"QT_QPA_PLATFORM": "xcb"}) == "vnc"
    no_display = find_problem([], {}, "linux", loader=loads)
    assert no_display is not None and "DISPLAY" in no_display and "xvfb-run" in no_display


def test_the_xcb_libraries_match_the_system_deps_script():
    script = (ROOT / "packaging" / "system_deps.sh").read_text()
    for package in ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0", "libxcb-render-util0",
                    "libxcb-shape0", "libxcb-xkb1", "libxkbcommon-x11-0", "libx11-xcb1"):
        assert package in XCB_LIBRARIES.values() and package in script, package


def test_main_stops_before_qt_with_the_message(monkeypatch, capsys):
    monkeypatch.setattr(platform_check, "find_problem", lambda: "Install them with make system-deps-gui")
    monkeypatch.setattr(app.QApplication, "instance", staticmethod(lambda: None))

    def no_qt(*args):
        raise AssertionError("the QApplication must not be created")

    monkeypatch.setattr(app, "create_application", no_qt)
    assert app.main([]) == 1
    assert "make system-deps-gui" in capsys.readouterr().err


def test_the_launcher_prints_the_fix_in_a_real_process():
    """A real launcher process missing one xcb library (a made-up soname added to the list) exits 1 with the message."""
    code = (
        "import sys\n"
        "from senior_intern.gui import platform_check, app\n"
        "platform_check.XCB_LIBRARIES['libdoes-not-exist-senior-intern.so.9'] = 'libdoes-not-exist9'\n"
        "sys.exit(app.main([]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "SENIOR_INTERN_SKIP_QT_CHECK")}
    env["DISPLAY"] = ":99"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "libdoes-not-exist-senior-intern.so.9" in out.stderr and "make system-deps-gui" in out.stderr
    assert "could not load the Qt platform plugin" not in out.stderr
