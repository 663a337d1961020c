"""The common ``.gitignore`` rules, without a dependency.

Supported, as git documents them: blank lines and ``#`` comments; ``\\#`` / ``\\!`` escapes;
trailing spaces (unless escaped); ``!`` negation (the last matching pattern wins); a trailing
``/`` for directories only; a ``/`` at the start or in the middle anchors the pattern to the
folder of its ``.gitignore`` (otherwise it matches at any depth); ``*``, ``?``, ``[...]``; and
``**`` as a leading ``**/``, a trailing ``/**`` or a middle ``/**/``. Nested ``.gitignore``
files apply to their own folder and below and take precedence over their parents.

As in git, a file inside an excluded directory cannot be re-included: the folder walk never
enters an excluded directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IgnoreRule:
    """One compiled pattern; ``base`` is the folder of its ``.gitignore``, relative to the walk root ('' for the root)."""

    pattern: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    base: str

    def matches(self, rel_path: str, is_dir: bool) -> bool:
        """Whether this rule matches ``rel_path`` ('/'-separated, relative to the walk root)."""
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not rel_path.startswith(self.base + "/"):
                return False
            rel_path = rel_path[len(self.base) + 1:]
        return self.regex.fullmatch(rel_path) is not None


def _translate(glob: str) -> str:
    """Regex source for a gitignore glob (without its anchor/negation/dir markers)."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        elif c == "*" and glob.startswith("**", i):
            at_start = i == 0 or glob[i - 1] == "/"
            at_end = i + 2 == n or glob[i + 2] == "/"
            if at_start and at_end:
                if i + 2 == n:  # 'a/**' or '**': everything below
                    out.append(".*")
                    i += 2
                else:  # '**/' : zero or more folders
                    out.append("(?:.*/)?")
                    i += 3
            else:  # '**' inside a name is a plain '*'
                out.append("[^/]*")
                i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob.startswith("[!", i) or glob.startswith("[^", i) else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1:end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse_rule(line: str, base: str = "") -> IgnoreRule | None:
    """Compile one ``.gitignore`` line; None for blank lines and comments."""
    line = line.rstrip("\r\n")
    # Trailing spaces are dropped unless escaped with a backslash.
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += " "
    line = stripped
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    elif line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dir_only = line.endswith("/") and not line.endswith("\\/")
    if dir_only:
        line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    line = line.lstrip("/")
    source = _translate(line)
    if not anchored and not line.startswith("**"):
        source = "(?:.*/)?" + source
    return IgnoreRule(line, re.compile(source, re.DOTALL), negated, dir_only, base)


class GitIgnore:
    """The rules of every ``.gitignore`` met so far in a folder walk, in precedence order."""

    def __init__(self) -> None:
        self.rules: list[IgnoreRule] = []

    def add_file(self, path: Path, base: str) -> None:
        """Read ``path`` (a ``.gitignore`` in folder ``base``, relative to the walk root)."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.add_lines(text.splitlines(), base)

    def add_lines(self, lines: list[str], base: str = "") -> None:
        """Add patterns given as text lines, relative to folder ``base``."""
        for line in lines:
            rule = parse_rule(line, base)
            if rule is not None:
                self.rules.append(rule)

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        """True when the last rule matching ``rel_path`` excludes it."""
        result = False
        for rule in self.rules:
            if rule.matches(rel_path, is_dir):
                result = not rule.negated
        return result
