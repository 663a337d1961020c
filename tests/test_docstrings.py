"""Every public module, class, function and method of the package has a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "senior_intern"


def _missing(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PACKAGE.parent).as_posix()
    out = [] if ast.get_docstring(tree) else [f"{rel}: module"]

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                public = not child.name.startswith("_")
                overload = any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in getattr(child, "decorator_list", []))
                if public and not overload and not ast.get_docstring(child):
                    out.append(f"{rel}:{child.lineno}: {prefix}{child.name}")
                if isinstance(child, ast.ClassDef) and public:
                    visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return out


def test_public_api_is_documented() -> None:
    missing = [m for f in sorted(PACKAGE.rglob("*.py")) for m in _missing(f)]
    assert not missing, "missing docstrings:\n" + "\n".join(missing)
