"""The architecture holds: the import contracts in pyproject.toml (`lint-imports`) are kept, they
catch a wrong import, and no import cycle exists anywhere in the package, counting imports inside
functions and under TYPE_CHECKING."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = ("cli", "demo", "tui", "monitor", "collectors", "storage", "analysis", "governance",
          "records")


def lint_imports(cwd: Path, env_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    if env_path is not None:
        env["PYTHONPATH"] = str(env_path)  # before the editable install's finder
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and " 0 broken" in result.stdout
    assert result.stdout.count("KEPT") >= 3


def test_a_wrong_import_breaks_a_contract(tmp_path: Path) -> None:
    """The same contracts over a scratch copy of the package where storage imports the TUI and
    the SDK imports polars: lint-imports fails and names both."""
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    # The package tree as the contracts see it (tractatus_watch/<layer> -> the top-level folder).
    shutil.copytree(ROOT / "tractatus_watch", copy / "tractatus_watch", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "tractatus_watch" / "storage" / "target.py", "a") as f:
        f.write("\nfrom ..tui import fmt  # a wrong import: storage is below the TUI\n")
    with open(copy / "tractatus_watch" / "governance" / "sender.py", "a") as f:
        f.write("\nimport polars  # a wrong import: the SDK stays light\n")
    result = lint_imports(copy, env_path=copy)
    assert result.returncode != 0
    assert "tractatus_watch.storage.target -> tractatus_watch.tui.fmt" in result.stdout
    assert "tractatus_watch.governance.sender -> polars" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(
                        child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_in_the_package() -> None:
    graph = grimp.build_graph("tractatus_watch", cache_dir=None)
    assert {f"tractatus_watch.{layer}" for layer in LAYERS} <= graph.modules
    # Imports inside functions count: the CLI imports its collectors lazily.
    assert graph.direct_import_exists(importer="tractatus_watch.cli.commands.collect",
                                      imported="tractatus_watch.collectors.runner")
    # So do imports under TYPE_CHECKING (grimp keeps them unless told to exclude them).
    assert graph.direct_import_exists(importer="tractatus_watch.collectors.gateway_wal",
                                      imported="tractatus_watch.storage.target")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
