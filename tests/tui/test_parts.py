"""The dashboard's parts: no import cycle in tui/, views never import the app, one command
table behind the command line and the palette, stable binding ids, reactive scope/pause/interval."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.widgets import Input

from tractatus_watch.tui import commands
from tractatus_watch.tui.app import Dashboard
from tractatus_watch.tui.scope import Scope
from tractatus_watch.tui.screens import HelpScreen, SilenceScreen
from tractatus_watch.tui.table import Table
from tractatus_watch.tui.views import VIEWS

from .helpers import settle

TUI = Path(__file__).resolve().parents[2] / "tui"


def tui_imports(root: Path = TUI) -> dict[str, set[str]]:
    """Module (dotted, relative to tui/) -> the tui modules it imports, counting every import
    statement: inside functions and under TYPE_CHECKING too."""
    modules = {".".join(p.relative_to(root).with_suffix("").parts): p
               for p in root.rglob("*.py")}
    modules = {m.removesuffix(".__init__").removesuffix("__init__"): p
               for m, p in modules.items()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue  # absolute imports of the package are caught by the relative rule below
            parts = package.split(".") if package else []
            base = parts[:len(parts) - node.level + 1]
            if node.level - 1 > len(parts):
                continue  # above tui/ (storage, governance)
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                for candidate in (f"{target}.{alias.name}".strip("."), target):
                    if candidate in modules and candidate != name:
                        graph[name].add(candidate)
                        break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_tui_and_views_never_import_the_app() -> None:
    graph = tui_imports()
    assert {"app", "refresh", "commands", "messages", "status_bar", "views", "views.base",
            "views.events"} <= set(graph)
    assert cycles(graph) == []
    # The parts below the app: nothing but tui/__init__ imports it.
    assert sorted(m for m, deps in graph.items() if "app" in deps) == [""]
    assert "app" not in graph["views.runs"] and "messages" in graph["views.runs"]


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "views").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "app.py").write_text("from .views import VIEWS\n")
    (tmp_path / "views" / "__init__.py").write_text(
        "def f():\n    from ..app import Dashboard\n")
    assert cycles(tui_imports(tmp_path)) == [["app", "views"]]


def all_bindings() -> list[tuple[str, Binding]]:
    owners: list[tuple[str, Any]] = [("Dashboard", Dashboard), ("Table", Table),
                                     ("HelpScreen", HelpScreen),
                                     ("SilenceScreen", SilenceScreen)]
    owners += [(v.TITLE, v) for v in VIEWS]
    return [(name, b) for name, owner in owners for b in owner.BINDINGS
            if isinstance(b, Binding)]


def test_every_binding_has_a_stable_unique_id() -> None:
    bindings = all_bindings()
    ids = [b.id for _, b in bindings]
    assert None not in ids and len(ids) == len(set(ids)) == 43
    for owner, b in bindings:
        prefix = {"Dashboard": "dashboard.", "Table": "table.", "HelpScreen": "help.",
                  "SilenceScreen": "silence."}.get(owner, f"{owner.lower()}.")
        assert b.id is not None and b.id.startswith(prefix), (owner, b)
    assert {b.id for _, b in bindings if b.action.startswith("view(")} == {
        f"dashboard.view.{v.TITLE.lower()}" for v in VIEWS}
    ids_of = {b.id: b.action for _, b in bindings}
    assert ids_of["dashboard.pause"] == "pause" and ids_of["events.older"] == "older"


def test_command_table_drives_the_command_line_help() -> None:
    assert [c.name for c in commands.COMMANDS] == [
        "run", "baseline", "compare", "silence", "interval", "theme", "export", "view", "quit"]
    line = commands.usage_line()
    assert line == ("run ID|latest · baseline ID|none · compare ID|none · "
                    "silence ALERT DURATION [COMMENT] · interval SECONDS · theme NAME · "
                    "export [csv|parquet] [PATH] · view N · quit")
    assert Dashboard.HELP["command"] == f"command line: {line}"


async def test_palette_provider_yields_the_table_and_opens_the_command_line(make_app) -> None:
    app = make_app(view="alerts")
    assert not app.ENABLE_COMMAND_PALETTE
    assert commands.CommandLineProvider in app.COMMANDS
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        provider = commands.CommandLineProvider(app.screen)
        found = [hit.text async for hit in provider.discover()]
        assert found == [c.usage for c in commands.COMMANDS]
        hits = [hit async for hit in provider.search("silence")]
        assert [h.text for h in hits] == ["silence ALERT DURATION [COMMENT]"]
        assert hits[0].help == commands.COMMANDS[3].help
        hits[0].command()
        await pilot.pause()
        prompt = app.query_one("#prompt", Input)
        assert prompt.display and prompt.has_focus and prompt.value == "silence "


async def test_scope_pause_and_interval_are_reactives(make_app) -> None:
    app = make_app(view="rules")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.refresher.armed and app.refresher.interval == 5.0
        app.paused = True  # the watcher stops the timer, as the space key does
        assert not app.refresher.armed and "PAUSED" in str(app.query_one("#status").render())
        app.interval = 0.5
        assert app.refresher.interval == 0.5 and "every 0.5s" in str(
            app.query_one("#status").render())
        app.paused = False  # refreshes now, then re-arms
        assert app.refresher.busy
        await settle(pilot)
        assert app.refresher.armed
        token = app.refresher.token
        app.scope = Scope(run_id="beta", follow_latest=False)
        assert app.refresher.token == token + 1  # a new scope fetches at once
        await settle(pilot)
        assert app.context.scope.run_id == "beta"
        assert app.query_one("#topbar").render().plain.rstrip().endswith("run beta")
