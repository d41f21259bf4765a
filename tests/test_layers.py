"""One layer per folder: imports point down only, the two roles never import each other, and no two files
import each other (directly or round a loop). Every import counts, also one inside a function."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# floor per top-level folder (README "Layout"); a folder may import only from lower floors and itself
FLOORS = {"mgpo": 1, "runtime": 2, "learner": 3, "actors": 3, "recipes": 4, "services": 5}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> set[str]:
    """Every module of ours that `path` names in an import statement (relative ones resolved)."""
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in found if name.split(".")[0] in FLOORS}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (names that are not modules, like classes, dropped)."""
    files = {_module_name(p, root): p for top in FLOORS for p in sorted((root / top).rglob("*.py"))}
    return {
        name: {m for m in _imports(path, root) if m in files and m != name} for name, path in files.items()
    }


def floor_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for source, targets in graph.items():
        here = source.split(".")[0]
        for target in targets:
            there = target.split(".")[0]
            if there != here and FLOORS[there] >= FLOORS[here]:
                out.append(f"{source} (floor {FLOORS[here]}) imports {target} (floor {FLOORS[there]})")
    return sorted(out)


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A loop of modules that import each other, or None. Package __init__ edges to their children are
    left out: importing `a.b` runs `a/__init__.py` first by Python's design, which is no loop of ours."""
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as err:
        return list(err.args[1])
    return None


def test_imports_point_down_and_roles_stay_apart():
    graph = import_graph(ROOT)
    assert {
        "mgpo.boxes",
        "runtime.queue",
        "learner.step",
        "actors.loop",
        "recipes.demo",
        "services.cli",
    } <= set(graph)
    assert floor_violations(graph) == []


def test_no_module_imports_itself_round_a_loop():
    assert import_cycle(import_graph(ROOT)) is None


def test_layer_check_finds_an_upward_import_a_sibling_role_and_a_loop(tmp_path):
    for name, text in {
        "mgpo/__init__.py": "",
        "mgpo/core.py": "",
        "runtime/__init__.py": "",
        "runtime/queue.py": "from services.cli import main\n",  # up: floor 2 -> 5
        "actors/__init__.py": "",
        "actors/loop.py": "def f():\n    from learner import step\n",  # sibling role, inside a function
        "learner/__init__.py": "",
        "learner/step.py": "from . import sft\n",
        "learner/sft.py": "import learner.step\n",  # loop step -> sft -> step
        "recipes/__init__.py": "",
        "services/__init__.py": "",
        "services/cli.py": "from mgpo.core import *\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert floor_violations(graph) == [
        "actors.loop (floor 3) imports learner (floor 3)",
        "actors.loop (floor 3) imports learner.step (floor 3)",
        "runtime.queue (floor 2) imports services.cli (floor 5)",
    ]
    assert set(import_cycle(graph)) == {"learner.step", "learner.sft"}
