"""detector/ is the functional core: it never imports the shell or the shell's libraries.

Every Python file under detector/ is parsed and every import checked: plain and
``from`` imports at any depth (inside functions, ``if TYPE_CHECKING`` blocks,
try/except), and ``importlib.import_module`` / ``__import__`` with a literal name.
Two rules: no Faust, Kafka or HTTP library, nor the ``pipelines`` shell or the
``simulator`` load generator, anywhere in detector/; and the sibling model
packages ``detector/anomaly`` and ``detector/forecast`` never import each other
(what they share belongs lower down, e.g. in ``detector/promql``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DETECTOR = Path(__file__).resolve().parents[2] / "detector"
FORBIDDEN = {"faust", "aiokafka", "mode", "aiohttp", "httpx", "pipelines", "simulator"}
SIBLINGS = ("detector.anomaly", "detector.forecast")  # neither imports the other


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


def resolved_imports(source: str, package: str) -> list[tuple[int, str]]:
    """Like :func:`imported_modules`, with relative imports resolved against ``package`` (the file's own).

    ``from .. import forecast`` in ``detector.anomaly`` gives ``detector.forecast``.
    """
    found = list(imported_modules(source))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module])))
            else:
                found += [(node.lineno, ".".join([*base, alias.name])) for alias in node.names]
    return found


def sibling_imports(source: str, package: str) -> list[tuple[int, str]]:
    """Imports of one sibling package (:data:`SIBLINGS`) from inside the other."""
    own = next((s for s in SIBLINGS if package == s or package.startswith(s + ".")), None)
    if own is None:
        return []
    others = [s for s in SIBLINGS if s != own]
    return [
        (line, name)
        for line, name in resolved_imports(source, package)
        if any(name == o or name.startswith(o + ".") for o in others)
    ]


def _package_of(path: Path) -> str:
    """The package relative imports in ``path`` start from: its directory (an ``__init__.py``'s too)."""
    return ".".join(path.relative_to(DETECTOR.parent).parent.parts)


def test_detector_never_imports_the_shell_or_its_libraries():
    files = sorted(DETECTOR.rglob("*.py"))
    assert len(files) > 10, f"expected the detector package at {DETECTOR}"
    offences = [
        f"{path.relative_to(DETECTOR.parent)}:{line}: import {name}"
        for path in files
        for line, name in forbidden_imports(path.read_text())
    ]
    assert offences == []


def test_anomaly_and_forecast_never_import_each_other():
    files = sorted((DETECTOR / "anomaly").rglob("*.py")) + sorted((DETECTOR / "forecast").rglob("*.py"))
    assert len(files) > 4, f"expected detector/anomaly and detector/forecast under {DETECTOR}"
    offences = [
        f"{path.relative_to(DETECTOR.parent)}:{line}: import {name}"
        for path in files
        for line, name in sibling_imports(path.read_text(), _package_of(path))
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
        "import pipelines.app",
        "from pipelines.settings import Settings",
        "def f():\n    from pipelines import state",
        "import aiohttp",
        "from aiohttp import web",
        "import httpx",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import httpx",
        "from simulator.runbook import Runbook",
        "import importlib\nimportlib.import_module('pipelines.app')",
    ],
)
def test_the_check_catches_every_form_of_import(source):
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    ["import model", "from modes import x", "import faustish", "from . import mode", "import pipelined", "import httpxx"],
)
def test_the_check_does_not_flag_similar_names(source):
    assert forbidden_imports(source) == []


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("detector.anomaly", "from detector.forecast.spec import parse_selector"),
        ("detector.anomaly", "def f():\n    from detector.forecast.spec import ForecastSpecError"),
        ("detector.anomaly", "import detector.forecast"),
        ("detector.anomaly", "from ..forecast import spec"),
        ("detector.anomaly", "from .. import forecast"),
        ("detector.anomaly", "import importlib\nimportlib.import_module('detector.forecast.trend')"),
        ("detector.forecast", "from detector.anomaly.models import make_model"),
        ("detector.forecast", "from ..anomaly.scorer import AnomalyScorer"),
        ("detector.forecast", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import detector.anomaly"),
    ],
)
def test_the_sibling_check_catches_imports_either_way(package, source):
    assert sibling_imports(source, package)


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("detector.anomaly", "from detector.promql.selectors import parse_selector"),
        ("detector.anomaly", "from .models import make_model"),
        ("detector.anomaly", "from detector.forecasting import x"),
        ("detector.forecast", "from . import trend"),
        ("detector.forecast", "import detector.anomalyish"),
        ("detector.promql", "from detector.anomaly import models"),  # only the two siblings are checked
    ],
)
def test_the_sibling_check_does_not_flag_other_imports(package, source):
    assert sibling_imports(source, package) == []
