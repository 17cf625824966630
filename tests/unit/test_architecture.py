"""detector/ is the functional core: it never imports the Faust shell's libraries.

Every Python file under detector/ is parsed and every import checked: plain and
``from`` imports at any depth (inside functions, ``if TYPE_CHECKING`` blocks,
try/except), and ``importlib.import_module`` / ``__import__`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DETECTOR = Path(__file__).resolve().parents[2] / "detector"
FORBIDDEN = {"faust", "aiokafka", "mode"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module name) of every import in a module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    return [(line, name) for line, name in imported_modules(source) if name.split(".")[0] in FORBIDDEN]


def test_detector_never_imports_faust_aiokafka_or_mode():
    files = sorted(DETECTOR.rglob("*.py"))
    assert len(files) > 10, f"expected the detector package at {DETECTOR}"
    offences = [
        f"{path.relative_to(DETECTOR.parent)}:{line}: import {name}"
        for path in files
        for line, name in forbidden_imports(path.read_text())
    ]
    assert offences == []


@pytest.mark.parametrize(
    "source",
    [
        "import faust",
        "import aiokafka.errors as e",
        "from mode import Service",
        "from faust.types import AppT",
        "def f():\n    import aiokafka",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import faust",
        "try:\n    import faust\nexcept ImportError:\n    pass",
        "import importlib\nimportlib.import_module('faust')",
        "__import__('mode.utils')",
    ],
)
def test_the_check_catches_every_form_of_import(source):
    assert forbidden_imports(source)


@pytest.mark.parametrize("source", ["import model", "from modes import x", "import faustish", "from . import mode"])
def test_the_check_does_not_flag_similar_names(source):
    assert forbidden_imports(source) == []
