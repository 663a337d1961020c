"""``docs/ARCHITECTURE.md`` stays true: every module and ``module::name`` it cites exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"


def _cited() -> set[str]:
    return set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py(?:::[A-Za-z_]+)?)`", DOC.read_text(encoding="utf-8")))


def _file(cited: str) -> Path:
    path = cited.split("::")[0]
    for root in (REPO / "senior_intern", REPO):
        if (root / path).is_file():
            return root / path
    raise AssertionError(f"docs/ARCHITECTURE.md cites {path}, which does not exist")


def test_every_cited_module_and_name_exists():
    cited = _cited()
    assert len(cited) > 30, "the page should name the modules it describes"
    for item in sorted(cited):
        file = _file(item)
        if "::" in item:
            name = item.split("::")[1]
            defined = {n.name for n in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                       if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            assert name in defined, f"docs/ARCHITECTURE.md cites {item}; {file.name} defines no {name}"


def test_the_readme_points_at_it_not_outside_the_repository():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/ARCHITECTURE.md" in readme
    assert "../shared" not in readme
