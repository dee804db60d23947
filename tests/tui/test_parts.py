"""The dashboard's parts: no import cycle in tui/, views never import the app, one command
table behind the command line and the palette, stable binding ids, reactive scope/pause/interval."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.widgets import Input

from tractatus_watch.tui import commands
from tractatus_watch.tui.app import Dashboard, binding_ids, binding_sections
from tractatus_watch.tui.prompt import Prompt
from tractatus_watch.tui.scope import Scope
from tractatus_watch.tui.screens import ConfirmScreen, HelpScreen, SilenceScreen
from tractatus_watch.tui.table import Table
from tractatus_watch.tui.views import NO_DATA, VIEWS

from .helpers import screen_text, settle

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
                                     ("Prompt", Prompt), ("HelpScreen", HelpScreen),
                                     ("ConfirmScreen", ConfirmScreen),
                                     ("SilenceScreen", SilenceScreen)]
    owners += [(v.TITLE, v) for v in VIEWS]
    return [(name, b) for name, owner in owners for b in owner.BINDINGS
            if isinstance(b, Binding)]


def test_every_binding_has_a_stable_unique_id() -> None:
    bindings = all_bindings()
    ids = [b.id for _, b in bindings]
    assert None not in ids and len(ids) == len(set(ids)) == 54
    # The help and the keymap know every one of them.
    assert sorted(binding_ids()) == sorted(i for i in ids if i)
    assert sum(len(b) for _, b in binding_sections()) == 54
    for owner, b in bindings:
        prefix = {"Dashboard": "dashboard.", "Table": "table.", "Prompt": "prompt.",
                  "HelpScreen": "help.", "ConfirmScreen": "confirm.",
                  "SilenceScreen": "silence."}.get(owner, f"{owner.lower()}.")
        assert b.id is not None and b.id.startswith(prefix), (owner, b)
    assert {b.id for _, b in bindings if b.action.startswith("view(")} == {
        f"dashboard.view.{v.TITLE.lower()}" for v in VIEWS}
    ids_of = {b.id: b.action for _, b in bindings}
    assert ids_of["dashboard.pause"] == "pause" and ids_of["events.older"] == "older"
    assert ids_of["dashboard.interrupt"] == "quit" and ids_of["dashboard.back"] == "go_back"
    assert ids_of["alerts.expire"] == "expire" and ids_of["table.down"] == "move(1)"


def test_command_table_drives_the_command_line_help() -> None:
    assert [c.name for c in commands.COMMANDS] == [
        "run", "baseline", "compare", "silence", "unsilence", "interval", "smooth", "theme",
        "export", "view", "help", "quit"]
    line = commands.usage_line()
    assert line == ("run ID|latest · baseline ID|none · compare ID|none · "
                    "silence ALERT DURATION [COMMENT] · unsilence ID · interval SECONDS · "
                    "smooth [WEIGHT|off] · theme NAME · export [csv|parquet] [PATH] · view N · "
                    "help · quit")
    assert Dashboard.KEY_HELP["command"] == f"command line: {line}"


async def test_palette_provider_yields_the_table_and_opens_the_command_line(make_app) -> None:
    app = make_app(view="alerts")
    assert app.ENABLE_COMMAND_PALETTE
    assert commands.CommandLineProvider in app.COMMANDS
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        provider = commands.CommandLineProvider(app.screen)
        found = [hit.text async for hit in provider.discover()]
        assert found == [c.usage for c in commands.COMMANDS] + [
            f"view {v.TITLE} ({v.KEY})" for v in VIEWS]
        hits = [hit async for hit in provider.search("silence")]
        assert [h.text for h in hits][:2] == ["silence ALERT DURATION [COMMENT]",
                                              "unsilence ID"]
        assert hits[0].help == commands.COMMANDS[3].help
        hits[0].command()
        await pilot.pause()
        prompt = app.query_one("#prompt", Input)
        assert prompt.display and prompt.has_focus and prompt.value == "silence "
        # A view hit switches at once; a bare command runs at once.
        hits = [hit async for hit in provider.search("overhead")]
        hits[0].command()
        await settle(pilot)
        assert app.current_view.TITLE == "Overhead"


def test_completion_from_the_command_table() -> None:
    class Target:
        def known_runs(self) -> list[str]:
            return ["alpha", "beta", "beta-2"]

        def alert_names(self) -> list[str]:
            return ["CoverageBelowTarget"]

        def silence_ids(self) -> list[str]:
            return ["tui-1-fp"]

        def theme_names(self) -> list[str]:
            return ["nord", "textual-dark"]

    t: Any = Target()
    assert commands.complete(t, "") == [f"{c.name} " for c in commands.COMMANDS]
    assert commands.complete(t, "un") == ["unsilence "]
    assert commands.complete(t, "run be") == ["run beta", "run beta-2"]
    assert commands.complete(t, "run ") == ["run alpha", "run beta", "run beta-2",
                                            "run latest"]
    assert commands.complete(t, "expire t") == ["expire tui-1-fp"]  # aliases complete too
    assert commands.complete(t, "silence C") == ["silence CoverageBelowTarget"]
    assert commands.complete(t, "silence X 1") == ["silence X 1h", "silence X 1d"]
    assert commands.complete(t, "silence X 1h com") == []  # the comment is free text
    assert commands.complete(t, "nosuch ") == []
    assert commands.complete(t, "export p") == ["export parquet"]


async def test_empty_states_say_the_situation(tmp_path: Path) -> None:
    from tractatus_watch.storage.store import Store

    store = Store.open(tmp_path / "empty.duckdb")
    rounds = [0]
    app = Dashboard(store, run_id="demo-run", title="demo",
                    empty_state=lambda: f"starting the demo: round {rounds[0]} of 5")
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            text = screen_text(app)
            assert "starting the demo: round 0 of 5" in text and "no data yet" not in text
            rounds[0] = 1
            await pilot.press("7")
            await settle(pilot)
            assert "starting the demo: round 1 of 5" in screen_text(app)
        # No run at all (following the latest): the same text.
        app = Dashboard(store, empty_state="no data in empty.duckdb yet. To collect, ...")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert "no data in empty.duckdb yet. To collect" in screen_text(app)
        app = Dashboard(store)  # without one: the general hint
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert NO_DATA[:40] in screen_text(app)
    finally:
        store.close()


def test_demo_empty_state_follows_the_demo() -> None:
    """`demo`'s empty views say where the demo is: starting, running, finished or failed;
    never the general "no data yet" hint."""
    from tractatus_watch.cli.commands.demo import demo_situation

    said = [demo_situation(0, 5, True), demo_situation(2, 5, True), demo_situation(5, 5, False),
            demo_situation(3, 5, False, RuntimeError("gateway gone\ntraceback..."))]
    assert said == [
        "starting the demo: round 1 of 5 (the gateway takes a few seconds)",
        "the demo is running: round 3 of 5, nothing for this view so far",
        "the demo finished (5 of 5 rounds): nothing for this view in the run",
        "the demo failed after 3 of 5 rounds: gateway gone (see the log)"]
    assert not any("no data yet" in text for text in said)


def test_live_empty_state_names_each_source(tmp_path: Path) -> None:
    from tractatus_watch.cli.commands.tui import waiting_for
    from tractatus_watch.collectors.gateway_tap import GatewayTap
    from tractatus_watch.collectors.poller import Poller
    from tractatus_watch.collectors.spool_reader import SpoolReader

    tap = GatewayTap(lambda _r: None, host="127.0.0.1", port=18123)
    text = waiting_for([tap, Poller("http://127.0.0.1:9/"), SpoolReader(tmp_path)])
    assert text() == ("no data yet: starting the gateway on 127.0.0.1:18123 …; "
                      "polling http://127.0.0.1:9: waiting for the first rollout; "
                      f"watching {tmp_path.resolve()}: waiting for the first spool file")
    tap.listening.set()  # what start() does once uvicorn accepts connections
    assert text().startswith("no data yet: gateway listening on 127.0.0.1:18123, point the "
                             "trainer here (AGL_SERVER_URL=http://127.0.0.1:18123 / "
                             "agl-server URL)")


def test_logs_to_file_keeps_the_terminal_clean(tmp_path: Path, capfd: Any) -> None:
    """What writes to the terminal under the dashboard goes to the log instead: logging
    (uvicorn configures its own stderr handlers when the gateway starts), structlog (Agent
    Lightning), warnings and prints; the terminal is given back afterwards."""
    import logging
    import sys
    import warnings

    import structlog
    import uvicorn

    from tractatus_watch.cli.commands.tui import logs_to_file, reroute_stream_handlers

    before = structlog.get_config()
    db = tmp_path / "w.duckdb"
    capfd.readouterr()
    with logs_to_file(db, "live") as path:
        uvicorn.Config(app=lambda *a: None, log_level="warning")  # handlers on sys.stderr
        reroute_stream_handlers()
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        structlog.get_logger().warning("AGL_KEY not set")
        structlog.get_logger().info("below the threshold")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        print("printed by a library")
        print("to stderr", file=sys.stderr)
        logging.getLogger("tractatus_watch.collect").warning("ours")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert path == tmp_path / "w.duckdb.live.log" and path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    for line in ("Invalid HTTP request received.", "event='AGL_KEY not set'",
                 "a library warning", "printed by a library", "to stderr", "ours"):
        assert line in text, (line, text)
    assert "below the threshold" not in text
    assert structlog.get_config() == before
    logging.getLogger("uvicorn.error").warning("after the block")  # back on the terminal
    assert "after the block" in capfd.readouterr().err


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
