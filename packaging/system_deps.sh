#!/usr/bin/env bash
# Installs the Debian packages Qt (and the tests) need, only those missing, only when we can (root + apt).
#   system_deps.sh test  -> what the offscreen platform (tests) needs, and desktop-file-validate
#                           (desktop-file-utils) for the desktop entry's test
#   system_deps.sh gui   -> what a real window (xcb / wayland) needs as well
set -u
mode=${1:-gui}
pkgs=(libegl1 libgl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3)
if [ "$mode" = test ]; then
  pkgs+=(desktop-file-utils)
fi
if [ "$mode" = gui ]; then
  pkgs+=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
         libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libwayland-cursor0
         libwayland-egl1 libx11-xcb1)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Qt needs these system libraries: ${missing[*]} (install them with your package manager)" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing Qt system libraries: ${missing[*]}"
$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
  || echo "Could not install ${missing[*]}; the app may not open a window." >&2
exit 0
