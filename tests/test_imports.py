"""The package's imports point one way (DESIGN.md): no cycles, function-local imports included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gatedrnn"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_imports(source: str, module: str) -> set[str]:
    """Every module of the package that ``source`` imports, at any depth (module level, inside
    functions and classes), except under ``if TYPE_CHECKING:``, which never runs."""
    found: set[str] = set()
    package = "gatedrnn"
    is_init = module == package

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:  # relative: from . import x / from .x import y
                    base = package if (is_init or child.level == 1) else package
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                if target == package:  # from . import results: the named submodules
                    found.update(f"{package}.{a.name}" for a in child.names
                                 if (PACKAGE / f"{a.name}.py").exists())
                    found.add(package)
                elif target.startswith(package + "."):
                    found.add(target)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name == package or a.name.startswith(package + "."))
            visit(child)

    visit(ast.parse(source))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = "gatedrnn" if path.stem == "__init__" else f"gatedrnn.{path.stem}"
        graph[name] = package_imports(path.read_text(), name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "gatedrnn.worker" in graph and "gatedrnn.slurm" in graph["gatedrnn.cli"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_sees_function_local_imports():
    """A cycle hidden in a function-local import (as worker <-> slurm once was) is found."""
    a = package_imports("def f():\n    from .b import x\n", "gatedrnn.a")
    b = package_imports("from .a import y\n", "gatedrnn.b")
    assert a == {"gatedrnn.b"} and b == {"gatedrnn.a"}
    assert find_cycle({"gatedrnn.a": a, "gatedrnn.b": b}) is not None
    guarded = package_imports("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n", "gatedrnn.a")
    assert guarded == set()


def test_only_cli_parses_arguments_and_only_folder_spells_the_queue_paths():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        if path.name != "cli.py":
            assert "ArgumentParser" not in text and "argparse" not in text, path.name
        if path.name not in ("folder.py", "__init__.py"):  # __init__ names modules (checkpoints), no paths
            for spelled in ('".queue"', '"checkpoints"', '"claims"', '"lock.holder"', '".ngram-'):
                assert spelled not in text, f"{path.name} spells {spelled}"


def test_unpickling_a_slurm_task_imports_no_torch():
    """submitit installs its USR2 handler only after it unpickles the task; loading
    gatedrnn.slurm must be quick, or a time-limit signal during the load kills the task
    instead of requeueing it (seen in CI: 'srun: error: task 0: User defined signal 2')."""
    import subprocess
    import sys

    code = ("import pickle, sys\n"
            "import gatedrnn.slurm as s\n"
            "pickle.loads(pickle.dumps(s.SlurmWorker({'name': 'x'})))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_analysis_side_and_the_launcher_import_no_torch():
    """DESIGN.md: the analysis side (results, stats, plots, report, analysis, status) and the
    storage under it never import torch, so examining a sweep starts quickly anywhere; nor do the
    command line and the launcher until a device other than the CPU is asked about."""
    import subprocess
    import sys

    modules = ["analysis", "results", "stats", "plots", "report", "status", "packing", "folder", "queue", "grid",
               "data", "options", "launcher", "cli", "tools", "export", "effects", "tuning", "mnist", "references"]
    code = ("import sys\n" + "".join(f"import gatedrnn.{m}\n" for m in modules)
            + "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_modules_and_procedures_keep_the_sizes_of_the_layout():
    """DESIGN.md: no module over ~500 lines, no function over ~80 except the hand-written
    backward passes, whose length is their arithmetic."""
    too_long = []
    for path in PACKAGE.glob("*.py"):
        source = path.read_text()
        if len(source.splitlines()) > 500:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "backward" not in node.name:
                if node.end_lineno - node.lineno + 1 > 80:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
