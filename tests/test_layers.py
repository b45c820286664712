"""The arrows between layers point one way: rules <- storage <- cache <- ops <- web.

rules/ is pure and imports nothing of condaproxy outside rules/; storage/ never imports the
engine (cache/), the operator features (ops/) or the edge (web/); cache/ never imports ops/ or
web/; ops/ never imports web/. The top-level settings.py may be imported by every layer but
rules/. Checked on the source text (ast), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "condaproxy"
ORDER = ["rules", "storage", "cache", "ops", "web"]


def imported(path: Path) -> set[str]:
    """condaproxy modules `path` imports, as dotted names below condaproxy."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module[: len(module) - node.level])
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("condaproxy"):
                target = node.module.removeprefix("condaproxy").lstrip(".")
            else:
                continue
            found.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("condaproxy."):
                    found.add(alias.name.removeprefix("condaproxy."))
    return found


def layer_of(dotted: str) -> str:
    return dotted.split(".")[0]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_only_to_lower_layers(path: Path):
    layer = path.relative_to(PACKAGE).parts[0]
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    if layer != "rules":
        allowed.add("settings")
    wrong = sorted(t for t in imported(path) if t and layer_of(t) not in allowed)
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}/) imports {wrong}"


def test_every_module_belongs_to_a_layer_or_is_an_entry_point():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= {"__init__.py", "__main__.py", "cli.py", "settings.py"}, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        ORDER
    )
