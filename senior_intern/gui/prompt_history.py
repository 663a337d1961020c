"""The Playground's memory: the last prompts and the sampling settings, kept in the app settings."""

from __future__ import annotations

import json
from typing import Any

from senior_intern.gui.settings import AppSettings

HISTORY_KEY = "playground/history"
OPTIONS_KEY = "playground/options"
MAX_PROMPTS = 20


class PromptHistory:
    """The last ``MAX_PROMPTS`` prompts, newest first, and the last sampling options.

    Without settings (a page made on its own) they live in memory only.
    """

    def __init__(self, settings: AppSettings | None) -> None:
        self.settings = settings
        self._prompts: list[str] = self._load(HISTORY_KEY, [])
        self._options: dict[str, Any] = self._load(OPTIONS_KEY, {})
        if not isinstance(self._prompts, list):
            self._prompts = []
        self._prompts = [p for p in self._prompts if isinstance(p, str) and p.strip()][:MAX_PROMPTS]
        if not isinstance(self._options, dict):
            self._options = {}

    def _load(self, key: str, default: Any) -> Any:
        if self.settings is None:
            return default
        raw = self.settings.value(key, "")
        try:
            return json.loads(str(raw)) if raw else default
        except ValueError:  # a hand-edited or damaged value: start again
            return default

    def prompts(self) -> list[str]:
        """The remembered prompts, newest first."""
        return list(self._prompts)

    def add(self, prompt: str) -> None:
        """Remember ``prompt`` as the newest (moved to the front when already there)."""
        prompt = prompt.strip()
        if not prompt:
            return
        self._prompts = [prompt] + [p for p in self._prompts if p != prompt][: MAX_PROMPTS - 1]
        if self.settings is not None:
            self.settings.set_value(HISTORY_KEY, json.dumps(self._prompts))
            self.settings.sync()

    def options(self) -> dict[str, Any]:
        """The last sampling options (keys as saved by ``set_options``)."""
        return dict(self._options)

    def set_options(self, options: dict[str, Any]) -> None:
        """Remember the sampling options."""
        self._options = dict(options)
        if self.settings is not None:
            self.settings.set_value(OPTIONS_KEY, json.dumps(self._options))
            self.settings.sync()
