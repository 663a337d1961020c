"""``AppSettings``: what the app remembers between sessions (QSettings).

Window geometry and state, the last folders and files the user picked, the current page and the
last job's settings. With ``SENIOR_INTERN_HOME`` set (portable installs, the tests) the settings
live in an INI file under that folder; otherwise in the platform's usual place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from senior_intern import paths
from senior_intern.config import ConfigError, TrainingJob

ORGANIZATION = "senior-intern"
APPLICATION = "Senior Intern"
SETTINGS_FILE = "gui-settings.ini"


def default_settings_file() -> Path | None:
    """The INI file to use when ``SENIOR_INTERN_HOME`` is set, else None (platform default)."""
    if os.environ.get("SENIOR_INTERN_HOME"):
        return paths.data_dir() / SETTINGS_FILE
    return None


class AppSettings:
    """Typed access to the remembered values; ``path`` picks an INI file (tests use a temp one)."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = path if path is not None else default_settings_file()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._qs = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self._qs = QSettings(ORGANIZATION, APPLICATION)

    @property
    def file_name(self) -> str:
        """Where the settings are stored (a file path or a registry key)."""
        return self._qs.fileName()

    def sync(self) -> None:
        """Write pending changes to storage."""
        self._qs.sync()

    # --- window ---------------------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        """Saved main-window geometry, or None."""
        value = self._qs.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_geometry(self, geometry: QByteArray) -> None:
        """Remember the main-window geometry."""
        self._qs.setValue("window/geometry", geometry)

    def window_state(self) -> QByteArray | None:
        """Saved main-window state (docks, toolbars), or None."""
        value = self._qs.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_state(self, state: QByteArray) -> None:
        """Remember the main-window state."""
        self._qs.setValue("window/state", state)

    def current_page(self) -> int:
        """Index of the page shown when the app was closed (0: Train)."""
        try:
            return int(self._qs.value("window/page", 0))
        except (TypeError, ValueError):
            return 0

    def set_current_page(self, index: int) -> None:
        """Remember the shown page."""
        self._qs.setValue("window/page", int(index))

    # --- paths ----------------------------------------------------------------------------------
    def last_path(self, kind: str) -> str:
        """Last file or folder chosen for ``kind`` (``model``, ``dataset``, ``job``...), or ''."""
        value = self._qs.value(f"paths/{kind}", "")
        return str(value) if value else ""

    def set_last_path(self, kind: str, path: str | Path) -> None:
        """Remember the file or folder chosen for ``kind``."""
        self._qs.setValue(f"paths/{kind}", str(path))

    def start_folder(self, kind: str) -> str:
        """Folder a file dialog for ``kind`` opens in: the last one's folder, or the home folder."""
        last = self.last_path(kind)
        if last:
            p = Path(last)
            folder = p if p.is_dir() else p.parent
            if folder.is_dir():
                return str(folder)
        return str(Path.home())

    # --- job --------------------------------------------------------------------------------------
    def last_job(self) -> TrainingJob | None:
        """The settings of the last job (a fresh id), or None when none was saved or it no longer reads."""
        raw = self._qs.value("job/last", "")
        if not raw:
            return None
        try:
            data = json.loads(str(raw))
            data.pop("id", None)
            data.pop("created_at", None)
            return TrainingJob.from_dict(data)
        except (ValueError, ConfigError, TypeError):
            return None

    def set_last_job(self, job: TrainingJob) -> None:
        """Remember a job's settings."""
        self._qs.setValue("job/last", json.dumps(job.to_dict()))

    # --- generic --------------------------------------------------------------------------------
    def value(self, key: str, default: Any = None) -> Any:
        """Any other remembered value."""
        return self._qs.value(key, default)

    def set_value(self, key: str, value: Any) -> None:
        """Remember any other value."""
        self._qs.setValue(key, value)
