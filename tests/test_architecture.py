"""The import direction: config ← jobs ← supervisor, and no cycle between modules.

Every import counts, also one inside a function (a lazy import hides a cycle, it does
not remove it). Also: no module over MAX_LINES, and no RQ key spelled by hand.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("config", "jobs", "supervisor")  # each may import only the ones before it
MAX_LINES = 400

pytestmark = pytest.mark.timeout(30)


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from jobs import history` imports the module jobs.history.
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    # A package's own __init__ is not an edge worth tracking (it imports nothing of ours but settings).
    return {target for target in found if "." in target or target == "config"}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def test_layers_import_only_downwards() -> None:
    wrong = []
    for name, targets in graph().items():
        layer = LAYERS.index(name.split(".")[0])
        for target in targets:
            if LAYERS.index(target.split(".")[0]) > layer:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target) :] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_check_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above would pass on nothing: make sure the parser finds both kinds of edge."""
    path = tmp_path / "probe.py"
    path.write_text("from jobs import views\n\ndef f():\n    from supervisor.cli import main\n")
    assert imports_of("jobs.probe", path, {"jobs.views", "supervisor.cli"}) == {"jobs.views", "supervisor.cli"}


def test_modules_stay_small() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


RQ_KEY_LITERAL = re.compile(
    r"""["'](rq:(job|worker|execution|executions|queue|wip|finished|failed|results|clean_registries)\b)"""
)


def test_no_rq_key_spelled_by_hand() -> None:
    """RQ's key names come from `jobs.keys` (RQ's own helpers), so RQ_KEY_PREFIX is honoured."""
    spelled = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in modules().values()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if RQ_KEY_LITERAL.search(line)
    ]
    assert spelled == []
