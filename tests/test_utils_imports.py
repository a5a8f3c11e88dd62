"""utils rests at the end of the chain: data -> models -> trainer -> runtime all import it, so
nothing under utils/ may import them back (not even inside a function)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "utils"
PROJECT_MODULES = {"data", "models", "trainer", "runtime"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `source`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def project_imports(source: str) -> list[tuple[int, str]]:
    return sorted((line, module) for line, module in imported_modules(source)
                  if module.split(".")[0] in PROJECT_MODULES)


def test_utils_is_a_package_of_modules():
    assert not (UTILS.parent / "utils.py").exists()
    assert len(list(UTILS.rglob("*.py"))) > 1


@pytest.mark.parametrize("path", sorted(UTILS.rglob("*.py")),
                         ids=lambda path: str(path.relative_to(UTILS)))
def test_utils_imports_nothing_of_the_project(path):
    assert project_imports(path.read_text()) == []


def test_the_check_sees_imports_at_any_depth():
    source = ("import os\nfrom models.panels import GAN_PANELS\nimport data.audio as audio\n"
              "def late():\n    import trainer\n    from runtime import main\n"
              "from . import files\nfrom utils.files import write_json\n")
    assert project_imports(source) == [(2, "models.panels"), (3, "data.audio"), (5, "trainer"),
                                       (6, "runtime")]
