"""Confab's own modules are imported at the top of a module, never inside a function: an import
tucked into a function hides a cycle or a layering break from import-linter's reading of the
graph (`make test` runs `lint-imports` with the contracts in pyproject.toml).

The one exception is an optional dependency: a module of ours that brings slack_bolt,
discord.py or wyoming is imported inside `try: ... except ImportError:`, which says what to
install."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "bots", "voice", "models")


def _ours(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    return any(a.name.split(".")[0] in PACKAGES for a in node.names)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _target(node: ast.Import | ast.ImportFrom, module: str) -> str:
    if isinstance(node, ast.Import):
        return node.names[0].name
    base = module.split(".")[:len(module.split(".")) - node.level] if node.level else []
    return ".".join(base + ([node.module] if node.module else []))


def in_function_imports(tree: ast.AST, module: str = "") -> list[tuple[int, str]]:
    """(line, module imported) of imports of our modules inside a function, outside an
    ImportError guard."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function and not guarded and _ours(child):
                    found.append((child.lineno, _target(child, module)))
                continue
            if isinstance(child, ast.Try) and any(_catches_import_error(h) for h in child.handlers):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
                for part in (child.handlers, child.orelse, child.finalbody):
                    for stmt in part:
                        visit(ast.Module(body=[stmt], type_ignores=[]), in_function, guarded)
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner, guarded)

    visit(tree, False, False)
    return found


def test_the_check_sees_an_import_in_a_function_and_spares_an_optional_one():
    tree = ast.parse("def f():\n    from engine import audio\n"
                     "def g():\n    try:\n        from .adapter import A\n    except ImportError:\n        pass\n"
                     "def h():\n    import torch\n")
    assert in_function_imports(tree, "engine.x") == [(2, "engine")]


def test_no_import_of_our_modules_inside_a_function():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT)
            module = ".".join(name.with_suffix("").parts)
            for line, _ in in_function_imports(ast.parse(path.read_text(), str(path)), module):
                offenders.append(f"{name}:{line}")
    assert not offenders, ("Import Confab's modules at the top of the module (move a shared piece "
                           "to the module both need to break a cycle): " + ", ".join(offenders))
