"""The package's architecture (DESIGN.md, "Layout"; STYLE 19): subpackages by responsibility whose
imports point one way, checked by import-linter's contracts (pyproject.toml); no import cycle,
function-local and type-only imports included; no torch where a sweep is only read; the sizes
of the layout."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gatedrnn"
SUBPACKAGES = ("spec", "store", "data", "models", "training", "analysis", "running", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module of the package that ``source`` (the text of ``module``) imports, at any depth
    (module level, inside functions and classes, under ``if TYPE_CHECKING:`` too: a type-only
    import is a dependency all the same)."""
    found: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                if child.level:  # relative: from . import x / from ..x import y
                    base = here[: len(here) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("gatedrnn"):
                    found.add(target)
                    for alias in child.names:  # from . import checkpoints: a submodule
                        if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists():
                            found.add(f"{target}.{alias.name}")
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "gatedrnn")
            visit(child)

    visit(ast.parse(source))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        graph[name] = package_imports(path.read_text(), name, path.name == "__init__.py")
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


def test_the_layers_and_the_torch_free_packages_are_a_kept_contract():
    """``lint-imports`` (import-linter, configured in pyproject.toml): the subpackages are layers
    whose imports point down, and spec, store, analysis (and the numpy-only data modules) never
    import torch, directly or through another module."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken" in proc.stdout


def test_the_package_has_no_import_cycle_type_only_imports_included():
    graph = import_graph()
    assert "gatedrnn.running.worker" in graph and "gatedrnn.running.slurm" in graph["gatedrnn.cli.main"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_sees_function_local_and_type_only_imports():
    """A cycle hidden in a function-local import (as worker <-> slurm once was), or in an import
    for a type only (as sources -> run once was), is found."""
    a = package_imports("def f():\n    from .b import x\n", "gatedrnn.p.a")
    b = package_imports("from .a import y\n", "gatedrnn.p.b")
    assert a == {"gatedrnn.p.b"} and b == {"gatedrnn.p.a"}
    assert find_cycle({"gatedrnn.p.a": a, "gatedrnn.p.b": b}) is not None
    typed = package_imports("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..q.b import x\n",
                            "gatedrnn.p.a")
    assert typed == {"gatedrnn.q.b"}


def test_every_module_lives_in_a_subpackage_of_at_most_a_dozen():
    """Folders are the architecture: at the top only the public entry points (the package, the
    module runner, its version, the public results loader); each subpackage holds at most ~12
    modules and says in its docstring what it is responsible for."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "_version.py", "results.py"}, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(SUBPACKAGES)
    for name in SUBPACKAGES:
        modules = [p for p in (PACKAGE / name).glob("*.py") if p.name != "__init__.py"]
        assert 2 <= len(modules) <= 12, (name, len(modules))
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and len(doc) > 80, name


def test_only_the_command_line_parses_arguments_and_only_folder_spells_the_queue_paths():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.parent.name != "cli":
            assert "ArgumentParser" not in text and "argparse" not in text, path
        if path.name != "folder.py":
            for spelled in ('".queue"', '"checkpoints"', '"claims"', '"lock.holder"', '".ngram-', '"promotions"'):
                assert spelled not in text, f"{path} spells {spelled}"


def test_unpickling_a_slurm_task_imports_no_torch():
    """submitit installs its USR2 handler only after it unpickles the task; loading
    gatedrnn.running.slurm must be quick, or a time-limit signal during the load kills the task
    instead of requeueing it (seen in CI: 'srun: error: task 0: User defined signal 2')."""
    code = ("import pickle, sys\n"
            "import gatedrnn.running.slurm as s\n"
            "pickle.loads(pickle.dumps(s.SlurmWorker({'name': 'x'})))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_analysis_side_and_the_launcher_import_no_torch():
    """At run time too (function-local imports are not run): the analysis side and the storage
    under it, the command line, the launcher and the tools around a sweep start without torch,
    which only the workers (and a device other than the CPU) need."""
    modules = ["spec", "spec.config", "spec.grid", "spec.packing", "store.folder", "store.queue", "store.status",
               "data.corpus", "data.mnist", "analysis", "analysis.results", "analysis.stats", "analysis.effects",
               "analysis.tuning", "analysis.plots", "analysis.report", "analysis.references", "analysis.rungs",
               "analysis.stages", "running.options", "running.launcher", "running.halving", "cli", "cli.tools",
               "cli.export", "results"]
    code = ("import sys\n" + "".join(f"import gatedrnn.{m}\n" for m in modules)
            + "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_modules_and_procedures_keep_the_sizes_of_the_layout():
    """DESIGN.md: no module over ~500 lines, no function over ~80 except the hand-written
    backward passes, whose length is their arithmetic."""
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        name = path.relative_to(PACKAGE)
        if len(source.splitlines()) > 500:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "backward" not in node.name:
                if node.end_lineno - node.lineno + 1 > 80:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
