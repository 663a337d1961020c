"""Before the QApplication exists: can Qt open a window here? If not, say what to install.

Without the system libraries of Qt's X11 plugin (libxcb-cursor0 and friends, which pip's PySide6
wheel does not bring), Qt aborts with "could not load the Qt platform plugin xcb" and a list of
plugin names, which tells a new user nothing. ``find_problem`` loads the same libraries first and,
when one is missing, returns a message naming the libraries, their Debian packages and the fix
(``make system-deps-gui``, which runs ``packaging/system_deps.sh gui``).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable, Mapping, Sequence

# The shared libraries Qt's xcb platform plugin links (soname -> Debian/Ubuntu package).
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
SKIP_VARIABLE = "SENIOR_INTERN_SKIP_QT_CHECK"
FIX = ("Install them with `make system-deps-gui` in the source folder (it runs "
       "`bash packaging/system_deps.sh gui`, which uses apt-get and sudo), or with your package manager")


def can_load(soname: str) -> bool:
    """True when the dynamic loader finds and loads ``soname`` (and what it needs)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def wanted_platform(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The Qt platform plugin the app will ask for: ``-platform NAME``, else ``QT_QPA_PLATFORM``,
    else "wayland" in a Wayland session and "xcb" otherwise (Qt's own choice on Linux)."""
    args = list(argv)
    for i, arg in enumerate(args[:-1]):
        if arg in ("-platform", "--platform"):
            return args[i + 1]
    if environ.get("QT_QPA_PLATFORM"):
        return environ["QT_QPA_PLATFORM"]
    return "wayland" if environ.get("WAYLAND_DISPLAY") else "xcb"


def find_problem(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
                 platform: str | None = None, loader: Callable[[str], bool] = can_load) -> str | None:
    """Why Qt could not open a window here, in words with the fix; None when nothing is wrong
    (or it is not Linux/X11, or ``SENIOR_INTERN_SKIP_QT_CHECK=1``)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or environ.get(SKIP_VARIABLE) == "1":
        return None
    if "xcb" not in wanted_platform(argv, environ).split(";")[0]:
        return None  # offscreen, wayland, vnc…: their own needs
    missing = [soname for soname in XCB_LIBRARIES if not loader(soname)]
    if missing:
        packages = " ".join(dict.fromkeys(XCB_LIBRARIES[s] for s in missing))
        return (
            "Senior Intern cannot open its window: Qt's X11 plugin (xcb) needs system libraries that are "
            f"missing here: {', '.join(missing)}.\n"
            f"{FIX} (Debian/Ubuntu: sudo apt-get install {packages}).\n"
            "The command line works without them: senior-intern --help.\n"
            f"(Set {SKIP_VARIABLE}=1 to try starting anyway.)"
        )
    if not environ.get("DISPLAY"):
        return ("Senior Intern cannot open its window: there is no display (DISPLAY is not set). Start it from a "
                "desktop session, or under a virtual X server: xvfb-run senior-intern-gui. "
                "The command line works without a display: senior-intern --help.")
    return None
