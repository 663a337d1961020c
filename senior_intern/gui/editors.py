"""One editor widget per config field type, with a common ``get`` / ``set`` / ``changed``.

``make_editor(tp, choices)`` picks the widget from the dataclass type hint: a spin box for
``int``, a line edit that accepts ``2e-4`` for ``float``, a check box for ``bool``, a combo box
for enums, a comma-separated line for ``list[str]``, a path line with a Browse button for paths.
``get()`` raises ``ValueError`` with a short reason when the text cannot be read.
"""

from __future__ import annotations

import contextlib
import enum
import typing
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget

INT_LIMIT = 2_000_000_000


@contextlib.contextmanager
def quiet(widget: QWidget) -> Iterator[None]:
    """Change ``widget`` without its signals firing (an editor's ``set`` never emits ``changed``)."""
    widget.blockSignals(True)
    try:
        yield
    finally:
        widget.blockSignals(False)


class Editor(QObject):
    """A field editor: ``widget`` to place in a layout, ``get()``/``set()``, ``changed`` signal."""

    changed = Signal()

    def __init__(self, widget: QWidget) -> None:
        super().__init__(widget)
        self.widget = widget

    def get(self) -> Any:  # pragma: no cover - every subclass overrides it
        """The value as the config expects it; ``ValueError`` when the text is not readable."""
        raise NotImplementedError

    def set(self, value: Any) -> None:  # pragma: no cover - every subclass overrides it
        """Show ``value`` without emitting ``changed``."""
        raise NotImplementedError


class IntEditor(Editor):
    """``int`` (``optional``: ``int | None``, where 0 shows as 'none' and reads as None)."""

    def __init__(self, optional: bool = False) -> None:
        self.box = QSpinBox()
        super().__init__(self.box)
        self.optional = optional
        self.box.setRange(0 if optional else -INT_LIMIT, INT_LIMIT)
        if optional:
            self.box.setSpecialValueText("none")
        self.box.setAccelerated(True)
        self.box.valueChanged.connect(self.changed)

    def get(self) -> int | None:
        """The spin box value (None for 'none' when optional)."""
        value = self.box.value()
        return None if self.optional and value == 0 else value

    def set(self, value: int | None) -> None:
        """Show an integer (None shows 'none')."""
        with quiet(self.box):
            self.box.setValue(0 if value is None else int(value))


class FloatEditor(Editor):
    """``float`` in a line edit, so ``2e-4`` and ``0.0002`` both work."""

    def __init__(self) -> None:
        self.line = QLineEdit()
        super().__init__(self.line)
        self.line.textChanged.connect(self.changed)

    def get(self) -> float:
        """The number typed; ValueError when it is not one."""
        text = self.line.text().strip()
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number (examples: 0.05, 2e-4)") from None

    def set(self, value: float) -> None:
        """Show a float in its shortest exact form."""
        with quiet(self.line):
            self.line.setText(repr(float(value)))


class BoolEditor(Editor):
    """``bool`` as a check box."""

    def __init__(self) -> None:
        self.check = QCheckBox()
        super().__init__(self.check)
        self.check.toggled.connect(self.changed)

    def get(self) -> bool:
        """Whether the box is checked."""
        return self.check.isChecked()

    def set(self, value: bool) -> None:
        """Check or uncheck the box."""
        with quiet(self.check):
            self.check.setChecked(bool(value))


class ChoiceEditor(Editor):
    """An enum (fixed choices) or a string with suggested choices (``editable``)."""

    def __init__(self, choices: list[str], enum_type: type[enum.Enum] | None = None, editable: bool = False) -> None:
        self.combo = QComboBox()
        super().__init__(self.combo)
        self.enum_type = enum_type
        self.combo.setEditable(editable)
        self.combo.addItems(choices)
        if editable:
            self.combo.editTextChanged.connect(self.changed)
        else:
            self.combo.currentIndexChanged.connect(self.changed)

    def get(self) -> Any:
        """The chosen value (an enum member for enum fields)."""
        text = self.combo.currentText().strip()
        return self.enum_type(text) if self.enum_type is not None else text

    def set(self, value: Any) -> None:
        """Select (or type) the value."""
        text = value.value if isinstance(value, enum.Enum) else str(value)
        with quiet(self.combo):
            index = self.combo.findText(text)
            if index >= 0:
                self.combo.setCurrentIndex(index)
            if self.combo.isEditable():
                self.combo.setEditText(text)


class TextEditor(Editor):
    """``str`` (``optional``: ``str | None``, empty reads as None)."""

    def __init__(self, optional: bool = False, placeholder: str = "") -> None:
        self.line = QLineEdit()
        super().__init__(self.line)
        self.optional = optional
        self.line.setPlaceholderText(placeholder)
        self.line.textChanged.connect(self.changed)

    def get(self) -> str | None:
        """The stripped text (None when empty and optional)."""
        text = self.line.text().strip()
        return None if self.optional and not text else text

    def set(self, value: str | None) -> None:
        """Show the text ('' for None)."""
        with quiet(self.line):
            self.line.setText(value or "")


class ListEditor(Editor):
    """``list[str]`` as a comma- or space-separated line."""

    def __init__(self, placeholder: str = "") -> None:
        self.line = QLineEdit()
        super().__init__(self.line)
        self.line.setPlaceholderText(placeholder)
        self.line.textChanged.connect(self.changed)

    def get(self) -> list[str]:
        """The names, split on commas and spaces."""
        return [part for part in self.line.text().replace(",", " ").split() if part]

    def set(self, value: list[str]) -> None:
        """Show the names comma-separated."""
        with quiet(self.line):
            self.line.setText(", ".join(value))


class PathEditor(Editor):
    """A path line with a Browse button; ``browse()`` returns the chosen path or None."""

    def __init__(self, browse: Callable[[str], str | None], optional: bool = False, placeholder: str = "") -> None:
        box = QWidget()
        super().__init__(box)
        self.optional = optional
        self.line = QLineEdit()
        self.line.setPlaceholderText(placeholder)
        self.button = QPushButton("Browse…")
        layout = QHBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.line, 1)
        layout.addWidget(self.button)
        self.line.textChanged.connect(self.changed)
        self.button.clicked.connect(lambda: self._browse(browse))

    def _browse(self, browse: Callable[[str], str | None]) -> None:
        chosen = browse(self.line.text())
        if chosen:
            self.line.setText(chosen)

    def get(self) -> str | None:
        """The stripped path (None when empty and optional)."""
        text = self.line.text().strip()
        return None if self.optional and not text else text

    def set(self, value: str | None) -> None:
        """Show the path ('' for None)."""
        with quiet(self.line):
            self.line.setText(value or "")


def make_editor(tp: Any, choices: list[str] | None = None) -> Editor:
    """The editor for a dataclass field of type ``tp`` (``choices``: suggestions for a string)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    if typing.get_origin(tp) is list:
        return ListEditor()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ChoiceEditor([m.value for m in tp], enum_type=tp)
    if tp is bool:
        return BoolEditor()
    if tp is int:
        return IntEditor(optional)
    if tp is float:
        return FloatEditor()
    if tp is str and choices:
        return ChoiceEditor(choices, editable=True)
    if tp is str:
        return TextEditor(optional)
    raise TypeError(f"No editor for field type {tp!r}")
