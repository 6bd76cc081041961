"""The package's import graph: no cycles, and the lower layers never import the stages.

Walks every module's source (imports at module level *and* inside functions; ``if TYPE_CHECKING:``
blocks are left out, they never run) and builds the graph of ``urn`` modules. Data flows one way
(ARCHITECTURE.md): ``engine/``, ``models/``, ``data/`` and ``crf/`` know nothing of the stages, the
classification phase or the report.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import urn

PACKAGE = Path(urn.__file__).parent
#: Layers that must not import what is built on them.
LOWER = ("urn.engine", "urn.models", "urn.data", "urn.crf")
UPPER = ("urn.stages", "urn.cam", "urn.report")
#: What the report must not import: it renders files, it runs no model (the evaluate stage writes them).
COMPUTE = ("urn.stages", "urn.cam", "urn.engine", "urn.models", "urn.crf", "urn.uncertainty_core")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``urn`` modules ``path`` imports anywhere outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "urn")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("urn"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_walk_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "urn.stages.pipeline" in graph["urn.cli"]  # imported inside `urn run`'s function only
    assert "urn.data.label_writing" in graph["urn.data.cli"]


def test_find_cycle_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_lower_layers_do_not_import_stages_cam_or_report() -> None:
    bad = sorted(
        f"{src} imports {dst}"
        for src, dsts in import_graph().items()
        if _under(src, LOWER)
        for dst in dsts
        if _under(dst, UPPER)
    )
    assert not bad, bad


def test_the_report_only_renders() -> None:
    bad = sorted(dst for dst in import_graph()["urn.report"] if _under(dst, COMPUTE))
    assert not bad, f"urn.report imports {bad}"


def test_the_crf_package_does_not_read_the_config() -> None:
    """``crf/`` is a pure library (CRF parameters in, marginals out); the config only feeds it."""
    bad = sorted(
        f"{src} imports urn.config"
        for src, dsts in import_graph().items()
        if _under(src, ("urn.crf",)) and "urn.config" in dsts
    )
    assert not bad, bad


def test_every_stage_is_one_module_with_run() -> None:
    """``urn run`` chains ``urn.stages.<stage>.run(cfg, run_dir, *, device, quiet)``, one module per stage."""
    import importlib
    import inspect

    from urn.stages.order import STAGES

    for stage in STAGES:
        run = importlib.import_module(f"urn.stages.{stage}").run
        params = inspect.signature(run).parameters
        assert list(params)[:2] == ["cfg", "run_dir"] and {"device", "quiet"} <= set(params), stage


def test_loading_a_config_does_not_import_torch() -> None:
    """The CLI parses options and configs (which hold ``CRFParams`` sections) before any torch import,
    so ``--help`` and usage errors answer at once."""
    code = "import sys, urn.cli, urn.config, urn.crf; urn.config.load_config('demo'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
