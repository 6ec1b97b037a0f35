"""The architecture the README states: short functions, and imports that only point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_CODE_LINES = 60

# package -> packages (prefixes) it must never import; the README's "Architecture" section lists the layers
FORBIDDEN = {
    "medinr": ("pipelines", "napari_plugin", "napari", "qtpy", "PyQt6", "PyQt5", "magicgui", "superqt"),
    "medinr.models": ("medinr.continuous", "medinr.checkpoint", "medinr.mri", "medinr.registration", "medinr.render",
                      "medinr.image_fit"),
    "medinr.mri": ("medinr.registration", "medinr.render"),
    "medinr.registration": ("medinr.mri", "medinr.render"),
    "medinr.render": ("medinr.mri",),
    "napari_plugin": ("pipelines",),
}


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _code_lines(node: ast.AST, source_lines: list[str]) -> int:
    """Lines of a function that hold code: not blank, not only a comment, not its docstring."""
    body = node.body  # type: ignore[attr-defined]
    doc = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for n in range(node.lineno, node.end_lineno + 1):  # type: ignore[attr-defined]
        text = source_lines[n - 1].strip()
        if text and not text.startswith("#") and n not in doc:
            count += 1
    return count


def test_no_function_is_longer_than_about_sixty_lines_of_code():
    long = []
    for path in _modules("medinr", "pipelines"):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > MAX_CODE_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over the limit: " + "; ".join(long)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_the_layers(package: str):
    bad = []
    for path in _modules(*package.split(".")[:1]) if "." not in package else _modules(package.replace(".", "/")):
        name = _module_name(path)
        if not (name == package or name.startswith(package + ".")):
            continue
        for imported in _imports(path):
            if any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{name} imports {imported}")
    assert not bad, "; ".join(bad)
