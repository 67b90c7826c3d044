"""The engine's imports point one way (docs/architecture.md): a module imports only its own layer or lower ones,
sibling packages of one layer stay apart, and no import cycle exists, lazy imports included (a cycle hidden in a
function is still a cycle)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lipcli"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("lipcli.errors", "lipcli.files", "lipcli.suggestions", "lipcli.layout", "lipcli.version", "lipcli.hookspecs",
     "lipcli.references", "lipcli.distributed", "lipcli.device", "lipcli.precision", "lipcli.reporting",
     "lipcli.gradients",
     "lipcli.checkpoint", "lipcli.results_folder", "lipcli.curves", "lipcli.figures", "lipcli.result_files"),
    ("lipcli.config",),
    ("lipcli.registry", "lipcli.components", "lipcli.plugin_host", "lipcli.engine"),
    ("lipcli.data", "lipcli.models", "lipcli.attacks", "lipcli.defence"),
    ("lipcli.training", "lipcli.evaluation", "lipcli.lipschitz"),
    ("lipcli.experiments", "lipcli.contracts"),
    ("lipcli.cli", "lipcli.__main__"),
    ("lipcli", "lipcli.api"),
)
"""Lowest first. A module belongs to the longest entry that is it or a package holding it."""

SEPARATE = {"lipcli.training", "lipcli.evaluation", "lipcli.lipschitz"}
"""Siblings that never import one another: what they share lives a layer lower."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> tuple[int, str]:
    """(layer, the entry of :data:`LAYERS` the module falls under)."""
    found = [(len(entry), layer, entry) for layer, entries in enumerate(LAYERS) for entry in entries
             if module == entry or (module.startswith(entry + ".") and entry != "lipcli")]
    if not found:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py and the docs")
    _, layer, entry = max(found)
    return layer, entry


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported lipcli module) for every import in the file, function-level ones included."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lipcli":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "lipcli":
                continue
            for alias in node.names:  # ``from lipcli import figures`` imports the module lipcli.figures
                candidate = f"{base}.{alias.name}"
                exists = (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").exists() \
                    or (ROOT.parent / Path(*candidate.split("."))).is_dir()
                yield node.lineno, candidate if exists else base
        else:
            yield from string_import(node)


def string_import(node: ast.AST) -> Iterator[tuple[int, str]]:
    """``importlib.import_module("lipcli.x")``, ``__import__("lipcli.x")`` and factory references
    ``"lipcli.x:attribute"``: imports too, only later."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if function in ("import_module", "__import__") and isinstance(node.args[0].value, str) \
                and re.fullmatch(r"lipcli(\.\w+)*", node.args[0].value):
            yield node.lineno, node.args[0].value
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
            and re.fullmatch(r"lipcli(\.\w+)*:\w+", node.value):
        yield node.lineno, node.value.partition(":")[0]


def edges() -> list[tuple[str, int, str]]:
    return [(module_name(path), line, target) for path in sorted(ROOT.rglob("*.py"))
            for line, target in imports(path) if target != module_name(path)]


def upward(found: list[tuple[str, int, str]]) -> list[str]:
    wrong = []
    for source, line, target in found:
        (low, source_unit), (high, target_unit) = unit(source), unit(target)
        if high > low or (high == low and source_unit != target_unit and SEPARATE & {source_unit, target_unit}):
            wrong.append(f"{source}:{line} imports {target} (layer {high}, {target_unit}) from layer {low}")
    return wrong


def cycles(found: list[tuple[str, int, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for source, _, target in found:
        graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return loops


def test_every_module_has_a_layer() -> None:
    for path in ROOT.rglob("*.py"):
        unit(module_name(path))


def test_the_import_reader_sees_the_engine_s_imports() -> None:
    """Known edges of every form: were the reader to find nothing, the checks below could not fail."""
    found = {(source, target) for source, _, target in edges()}
    assert ("lipcli.models.build", "lipcli.defence") in found  # from lipcli.x import y
    assert ("lipcli.lipschitz.dataset_report", "lipcli.figures") in found  # from lipcli import module
    assert ("lipcli.plugin_host", "lipcli.hookspecs") in found
    assert len(found) > 200


def test_string_imports_count() -> None:
    tree = ast.parse('import importlib\nimportlib.import_module("lipcli.training.trainer")\n__import__("lipcli.data")\n'
                     'Reference("lipcli.lipschitz.measure:measure_checkpoints")\nlogger = "lipcli.verbose"\n')
    found = sorted(target for node in ast.walk(tree) for _, target in string_import(node))
    assert found == ["lipcli.data", "lipcli.lipschitz.measure", "lipcli.training.trainer"]


def test_no_import_points_up_a_layer_or_across_separate_siblings() -> None:
    assert upward(edges()) == []


def test_no_import_cycle() -> None:
    assert cycles(edges()) == []


@pytest.mark.parametrize(("source", "target", "caught"), [
    ("lipcli.models.build", "lipcli.training.trainer", True),  # up a layer
    ("lipcli.lipschitz.measure", "lipcli.evaluation.results", True),  # across separate siblings
    ("lipcli.evaluation.results", "lipcli.evaluation.attack_set", False),  # within a package
    ("lipcli.cli.app", "lipcli.config", False),  # down
])
def test_the_checks_catch_what_they_should(source: str, target: str, caught: bool) -> None:
    assert bool(upward([(source, 1, target)])) == caught
    assert cycles([("lipcli.a", 1, "lipcli.b"), ("lipcli.b", 2, "lipcli.a")]) == [["lipcli.a", "lipcli.b", "lipcli.a"]]
