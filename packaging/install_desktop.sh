#!/usr/bin/env bash
# Adds Senior Intern to the desktop's application menu (Linux, freedesktop.org desktops), or
# takes it out again. Used by `make install-desktop` and `make uninstall-desktop`.
#
#   install_desktop.sh install   [LAUNCHER]   desktop entry + icons, Exec = LAUNCHER
#   install_desktop.sh uninstall              removes exactly the files `install` writes
#
# LAUNCHER is the absolute path of the `senior-intern-gui` launcher (default: this checkout's
# .venv/bin/senior-intern-gui). Files go under ${DESTDIR}${XDG_DATA_HOME:-$HOME/.local/share}:
#   applications/senior-intern.desktop
#   icons/hicolor/256x256/apps/senior-intern.png
#   icons/hicolor/scalable/apps/senior-intern.svg
# Running `install` again overwrites the same files (a new LAUNCHER replaces the old one).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
data_home="${DESTDIR:-}${XDG_DATA_HOME:-$HOME/.local/share}"
app_id=senior-intern
entry="$data_home/applications/$app_id.desktop"
png="$data_home/icons/hicolor/256x256/apps/$app_id.png"
svg="$data_home/icons/hicolor/scalable/apps/$app_id.svg"

die() { echo "install_desktop.sh: $*" >&2; exit 1; }

# The Exec/TryExec value for a path, quoted as the Desktop Entry spec asks when it holds
# reserved characters. Characters that would need a second level of escaping are refused.
exec_path() {
  local path=$1
  case "$path" in
    *[\"\`\$\\]* | *$'\n'*) die "the launcher path '$path' contains \", \`, \$, \\ or a newline; move the checkout to a plainer path" ;;
  esac
  path=${path//%/%%}
  if [[ "$path" =~ [[:space:]\'\<\>~\|\&\;\*\?\#\(\)] ]]; then
    printf '"%s"' "$path"
  else
    printf '%s' "$path"
  fi
}

# Refresh the caches desktops read, where such a cache is in use and the tool is installed.
# No cache is started where there was none: desktops read these folders directly, and a cache
# nobody keeps up to date would later hide entries and icons that other programs install.
# Touching the folders is enough to make running desktops rescan them.
refresh_caches() {
  local apps="$data_home/applications" theme="$data_home/icons/hicolor"
  if [ -d "$apps" ]; then
    touch "$apps"
    if [ -f "$apps/mimeinfo.cache" ] && command -v update-desktop-database >/dev/null 2>&1; then
      update-desktop-database -q "$apps" || echo "update-desktop-database failed for $apps (the menu may update later)" >&2
    fi
  fi
  if [ -d "$theme" ]; then
    touch "$theme"
    if { [ -f "$theme/index.theme" ] || [ -f "$theme/icon-theme.cache" ]; } && command -v gtk-update-icon-cache >/dev/null 2>&1; then
      gtk-update-icon-cache -q -f "$theme" || echo "gtk-update-icon-cache failed for $theme (the icon may show later)" >&2
    fi
  fi
}

install_entry() {
  local launcher=${1:-$repo/.venv/bin/senior-intern-gui}
  case "$launcher" in /*) ;; *) die "the launcher must be an absolute path, got '$launcher'" ;; esac
  [ -x "$launcher" ] || die "no launcher at $launcher; run 'make install' first (or pass the path of senior-intern-gui)"
  [ -f "$repo/resources/icon.png" ] || die "missing $repo/resources/icon.png (draw it with: .venv/bin/python packaging/make_icon.py)"
  [ -f "$repo/resources/icon.svg" ] || die "missing $repo/resources/icon.svg (draw it with: .venv/bin/python packaging/make_icon.py)"

  local quoted
  quoted=$(exec_path "$launcher")
  mkdir -p "$(dirname "$entry")" "$(dirname "$png")" "$(dirname "$svg")"
  # Write next to the target and rename, so a desktop watching the folder never reads half a file.
  local line found=0
  while IFS= read -r line; do
    case "$line" in
      "Exec=senior-intern-gui "*) line="Exec=$quoted ${line#Exec=senior-intern-gui }"; found=1 ;;
      "TryExec=senior-intern-gui") line="TryExec=$launcher" ;;  # a plain path: no Exec quoting
    esac
    printf '%s\n' "$line"
  done < "$here/senior-intern.desktop" > "$entry.tmp"
  [ "$found" -eq 1 ] || { rm -f "$entry.tmp"; die "no 'Exec=senior-intern-gui ...' line in $here/senior-intern.desktop"; }
  chmod 644 "$entry.tmp"
  mv -f "$entry.tmp" "$entry"
  install -m 644 "$repo/resources/icon.png" "$png"
  install -m 644 "$repo/resources/icon.svg" "$svg"
  refresh_caches
  echo "Installed $entry (runs $launcher)"
  echo "Installed icons $png and $svg"
}

uninstall_entry() {
  local removed=0 file
  for file in "$entry" "$png" "$svg"; do
    if [ -e "$file" ]; then
      rm -f "$file"
      echo "Removed $file"
      removed=1
    fi
  done
  if [ "$removed" -eq 1 ]; then
    refresh_caches
  else
    echo "Nothing to remove under $data_home"
  fi
}

case "${1:-}" in
  install) install_entry "${2:-}" ;;
  uninstall) uninstall_entry ;;
  *) echo "usage: $0 install [LAUNCHER] | uninstall" >&2; exit 2 ;;
esac
