"""The layering of razard/ and agents/, read from the source with ast.

Every import is an arrow, wherever it is written: at module level, under
``if TYPE_CHECKING:`` or inside a function (a function-level import that dodges a
cycle is still the cycle). The rules (docs/ARCHITECTURE.md, "Layout"):

- no cycle among the modules of razard/ and agents/;
- nothing in razard/ imports agents/, except the composition roots that wire the
  layer agents into the daemon and the CLIs that reach them (`COMPOSITION_ROOTS`);
- the escalation subsystem does not import the repair subsystem;
- the bottom layer (`BOTTOM`) imports nothing of razard/ or agents/ but what it lists;
- the supervisor's seams point one way (`SUPERVISOR_SEAMS`): the operations razarctl
  calls import the supervisor, which imports the runner, never back;
- razarctl's path to razard (`CTL_PATH`) does not import razard.control, asyncio or
  dbus-fast but through razard.dbuswire, which loads dbus-fast's wire layer without its
  asyncio bus (issue 18: razarctl's start-to-exit).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("razard", "agents")

#: razard's composition roots and CLIs: they may import agents/ (the daemon builds the
#: layer agents; ``razard`` checks host support; ``razarctl verify-monitoring`` runs the check).
COMPOSITION_ROOTS = frozenset({"razard.daemon", "razard.cli", "razard.ctl"})

#: The bottom layer and the only modules of razard/ and agents/ each may import.
BOTTOM: Mapping[str, frozenset[str]] = {
    "razard.errors": frozenset(),
    "razard.layers": frozenset(),
    "razard.layout": frozenset(),
    "razard.configreader": frozenset({"razard.errors"}),
    "razard.states": frozenset(),
}

#: The supervisor's seams point one way: operations -> supervisor -> runner (each may
#: import those after it, never those before it).
SUPERVISOR_SEAMS = ("razard.operations", "razard.supervisor", "razard.runner")

#: razarctl's path to razard: its commands, the control interface's definition, the
#: blocking client and the wire layer it loads.
CTL_PATH = ("razard.ctl", "razard.controlapi", "razard.controlsync", "razard.dbuswire")
#: Libraries `CTL_PATH` must not import (razard.dbuswire alone imports dbus_fast's modules).
CTL_PATH_NOT = ("asyncio", "dbus_fast")

Graph = dict[str, set[str]]


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def arrows(name: str, source: str, known: Iterable[str], *, is_package: bool = False) -> set[str]:
    """The modules of ``known`` that ``source`` (module ``name``) imports, anywhere in it."""
    known = set(known)
    tree = ast.parse(source)
    out: set[str] = set()

    def target(dotted: str) -> str | None:
        parts = dotted.split(".")
        while parts:  # `import razard.repair.patch` or an attribute path: the longest module
            candidate = ".".join(parts)
            if candidate in known:
                return candidate
            parts.pop()
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                t = target(alias.name)
                if t:
                    out.add(t)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                t = target(f"{base}.{alias.name}") if base else target(alias.name)
                t = t or target(base)
                if t:
                    out.add(t)
    out.discard(name)
    return out


def import_graph(root: Path = ROOT) -> Graph:
    mods = module_names(root)
    return {
        name: arrows(
            name, path.read_text(encoding="utf-8"), mods, is_package=path.name == "__init__.py"
        )
        for name, path in mods.items()
    }


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the path ``a -> b -> ... -> a``, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, black) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if colour.get(nxt) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(graph):
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def _offending(graph: Graph, source: str, target: str, allowed: Iterable[str] = ()) -> list[str]:
    """``module -> imported`` for every arrow from ``source``'s tree into ``target``'s."""

    def under(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    allowed = set(allowed)
    return sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        if under(m, source) and m not in allowed
        for t in ts
        if under(t, target)
    )


# --------------------------------------------------------------------------- the rules


def test_no_cycle_among_razard_and_agents(graph: Graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_does_not_import_the_layer_agents(graph: Graph) -> None:
    assert _offending(graph, "razard", "agents", COMPOSITION_ROOTS) == []


def test_escalation_does_not_import_repair(graph: Graph) -> None:
    assert _offending(graph, "razard.escalation", "razard.repair") == []


def test_the_supervisor_seams_point_one_way(graph: Graph) -> None:
    for i, module in enumerate(SUPERVISOR_SEAMS):
        assert module in graph, f"{module} is gone: update SUPERVISOR_SEAMS"
        upward = sorted(graph[module] & set(SUPERVISOR_SEAMS[:i]))
        assert upward == [], f"{module} imports {upward}"
    assert "razard.runner" in graph["razard.supervisor"]  # the arrows are read
    assert "razard.supervisor" in graph["razard.operations"]


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_bottom_layer_imports_nothing_above_it(graph: Graph, module: str) -> None:
    assert module in graph, f"{module} is gone: update BOTTOM"
    assert graph[module] <= BOTTOM[module], f"{module} imports {sorted(graph[module])}"


def imported_names(source: str) -> set[str]:
    """Every absolute module name ``source`` imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_razarctl_path_does_not_import_the_asyncio_bus(graph: Graph) -> None:
    assert [a for m in CTL_PATH for a in _offending(graph, m, "razard.control")] == []
    mods = module_names()
    found = []
    for name, path in mods.items():
        if not any(name == m or name.startswith(m + ".") for m in CTL_PATH):
            continue
        for imported in imported_names(path.read_text(encoding="utf-8")):
            top = imported.split(".")[0]
            if top in CTL_PATH_NOT and not (name == "razard.dbuswire" and top == "dbus_fast"):
                found.append(f"{name} -> {imported}")
    assert found == []
    # the rule reads the arrows: the asyncio client is razard.control, and it is seen
    assert "razard.controlapi" in graph["razard.control"]
    assert "asyncio" in imported_names(mods["razard.control"].read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the reader itself


def test_the_graph_sees_the_arrows_that_exist(graph: Graph) -> None:
    """The rules above pass only because the arrows are absent, not because none are read:
    the daemon's composition of the layer agents and the config's sections are seen."""
    assert "agents.chakra" in graph["razard.daemon"]
    assert "razard.config" in graph["agents.chakra"]
    assert {"razard.configreader", "razard.chakra_config"} <= graph["razard.config"]
    assert "razard.layout" in graph["razard.escalation.notifier"]
    # a function-level import counts (razard.cli checks host support lazily)
    assert "agents.healing.units" in graph["razard.cli"]


def test_function_level_relative_and_type_checking_imports_are_arrows() -> None:
    known = {"p", "p.a", "p.b", "p.c", "p.d", "p.sub", "p.sub.e", "q"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from . import a\n"
        "from .sub.e import thing\n"
        "if TYPE_CHECKING:\n"
        "    from p.b import B\n"
        "def f():\n"
        "    import p.c\n"
        "    from p import d as _d\n"
    )
    assert arrows("p.x", source, known) == {"p.a", "p.b", "p.c", "p.d", "p.sub.e"}
    assert arrows("p.sub", "from . import e\nfrom .. import a\n", known, is_package=True) == {
        "p.sub.e",
        "p.a",
    }


def test_find_cycle_names_the_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
