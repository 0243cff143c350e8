"""The package's shape (docs/architecture.md): layers import downwards only, no cycles, small modules."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "seq2seq"

# Each part of the package and the parts it may import (besides itself). Entry points, the dashboard and the
# analyses sit on top and do not import one another.
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "data": set(),
    "inference": {"models", "data"},
    "evaluation": {"models", "data", "inference"},
    "training": {"models", "data", "inference", "evaluation"},
    "config": {"models", "data", "inference", "evaluation", "training"},
    "dashboard": {"evaluation"},
    "analysis": {"models", "data", "inference", "evaluation", "config"},
    "entry": {"models", "data", "inference", "evaluation", "training", "config", "dashboard"},
}
ENTRY_POINTS = {"train", "evaluate", "translate", "report", "sweep_report"}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def modules() -> dict[str, Path]:
    """Dotted name → file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def part(module: str) -> str:
    """The layer a dotted module name belongs to."""
    name = module.split(".")[1] if "." in module else ""
    if name in ENTRY_POINTS or name == "":
        return "entry"
    return name


def imports(path: Path) -> set[str]:
    """Every ``seq2seq.*`` module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seq2seq"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("seq2seq"))
    known = modules()
    return {name for name in found if name in known}


def test_layers_import_downwards_only():
    wrong = []
    for module, path in modules().items():
        here = part(module)
        for target in imports(path):
            there = part(target)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(wrong)


def test_models_know_nothing_of_lightning_hydra_or_wandb():
    for path in (PACKAGE / "models").glob("*.py"):
        names = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert not names & {"pytorch_lightning", "lightning", "hydra", "omegaconf", "wandb"}, path


def test_no_import_cycles():
    graph = {module: imports(path) for module, path in modules().items()}
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the current path, 2 done

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if target == module or target.startswith(module + "."):
                continue  # a package importing its own submodules
            if state[target] == 1:
                pytest.fail("import cycle: " + " → ".join([*trail[trail.index(target) :], target]))
            if state[target] == 0:
                visit(target, [*trail, target])
        state[module] = 2

    for module in graph:
        if state[module] == 0:
            visit(module, [module])


def test_modules_and_classes_stay_small():
    big = []
    for module, path in modules().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{module}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, big


def test_the_layer_table_covers_every_part():
    assert {part(module) for module in modules()} <= set(ALLOWED)
