"""Every key of the dashboard, driven with Pilot on a real database."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import ContentSwitcher, Input, Static

from tractatus_watch.storage.alert_store import DuckDBAlertStore
from tractatus_watch.storage.store import Store
from tractatus_watch.tui import keymap as K
from tractatus_watch.tui.table import Table
from tractatus_watch.tui.app import Dashboard, binding_ids, load_keymap
from tractatus_watch.tui.prompt import History, default_history_path
from tractatus_watch.tui.screens import ConfirmScreen, HelpScreen, SilenceScreen
from tractatus_watch.tui.tab_bar import TabBar
from tractatus_watch.tui.views import VIEWS, Agents, Events

from .helpers import FIXED_NOW, screen_text, settle


def rows_of(app: Any, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", Table)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def status(app: Any) -> str:
    return str(app.query_one("#status").render())


async def type_prompt(pilot: Any, opener: str, text: str) -> None:
    await pilot.press(opener)
    prompt = pilot.app.query_one("#prompt", Input)
    assert prompt.display and prompt.has_focus
    prompt.value = text
    await pilot.press("enter")
    await settle(pilot)


async def until(pilot: Any, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(screen_text(pilot.app))
        await pilot.pause(0.02)


def help_text(app: Any) -> str:
    """The whole help table as text (it is taller than the screen)."""
    from rich.console import Console

    console = Console(width=160, record=True, file=open("/dev/null", "w"), color_system=None)
    console.print(app.screen.keys_table)
    return console.export_text()


async def test_number_keys_switch_views(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for view in VIEWS:
            await pilot.press(view.KEY)
            await settle(pilot)
            assert app.query_one("#views", ContentSwitcher).current == f"view-{view.TITLE.lower()}"
            assert app.current_view.has_focus_within or app.current_view.has_focus
        # The footer lists the keys of the view in focus (here Events: n, p, g).
        screen = screen_text(app)
        assert "n Older" in screen and "p Newer" in screen


async def test_help_lists_every_key_with_its_binding_id(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = help_text(app)
        for binding in Dashboard.BINDINGS:
            assert Dashboard.KEY_HELP.get(binding.action, binding.description)[:30] in text, binding
        for view in VIEWS:
            for binding in view.BINDINGS:
                assert binding.description in text, (view.TITLE, binding)
        lines = text.splitlines()
        for binding_id in binding_ids():  # every id, on the line of its key
            assert any(ln.rstrip().endswith(f" {binding_id}") for ln in lines), binding_id
        row = next(ln for ln in lines if ln.rstrip().endswith(" table.down"))
        assert row.split()[0] == "down,j"
        assert "unsilence ID" in text and "ctrl+p" in screen_text(app)
        await pilot.press("j")  # j/k scroll the help
        assert app.screen.query_one("#help-box").scroll_y == 1
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_filter_key_per_view(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("slash")  # the overview has no filter: says where filters are
        await pilot.pause()
        assert "has no filter" in screen_text(app)
        await pilot.press("2")
        await type_prompt(pilot, "slash", "STR-001")
        assert {r[2] for r in rows_of(app, "rules-table")} == {"STR-001"}  # after the arm
        await pilot.press("5")
        await type_prompt(pilot, "slash", "escaped>0")
        rows = rows_of(app, "agents-table")
        assert rows and all(int(r[5]) > 0 for r in rows)
        await type_prompt(pilot, "slash", "escaped>")  # invalid: error, prompt stays open
        assert "escaped takes a number" in screen_text(app)
        await pilot.press("escape")
        assert not app.query_one("#prompt", Input).display
        await pilot.press("7")
        await type_prompt(pilot, "slash", "verdict=block arm=governed")
        rows = rows_of(app, "events-table")
        assert rows and all(r[6] == "block" and r[3] == "governed" for r in rows)


async def test_command_line(make_app) -> None:
    app = make_app(view="runs")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await type_prompt(pilot, "colon", "run beta")
        assert app.scope.run_id == "beta" and not app.scope.follow_latest
        assert "run beta" in screen_text(app)
        await type_prompt(pilot, "colon", "baseline alpha")
        assert app.scope.baseline_run == "alpha"
        assert "run beta vs alpha" in screen_text(app)
        await type_prompt(pilot, "colon", "interval 0.5")
        assert app.interval == 0.5 and "every 0.5s" in status(app)
        await type_prompt(pilot, "colon", "view 3")
        assert app.current_view.TITLE == "Alerts"
        await type_prompt(pilot, "colon", "theme nord")
        assert app.theme == "nord"
        await type_prompt(pilot, "colon", "run nosuch")
        assert "no run 'nosuch'" in screen_text(app)
        await pilot.press("escape")
        await type_prompt(pilot, "colon", "frobnicate")
        assert "unknown command 'frobnicate'" in screen_text(app)
        await pilot.press("escape")
        await type_prompt(pilot, "colon", "run latest")
        assert app.scope.follow_latest and app.scope.run_id == "alpha"


async def test_pause_and_interval_keys(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.interval == 5.0 and app.refresher.armed
        await pilot.press("space")
        assert app.paused and not app.refresher.armed and "PAUSED" in status(app)
        done = app.refreshes
        await pilot.press("r")  # a manual refresh still works while paused
        await settle(pilot)
        assert app.refreshes == done + 1 and not app.refresher.armed
        await pilot.press("space")
        await settle(pilot)
        assert not app.paused and app.refresher.armed and "PAUSED" not in status(app)
        await pilot.press("plus")
        assert app.interval == 10.0 and "every 10s" in status(app)
        await pilot.press("minus", "minus")
        assert app.interval == 2.0 and "every 2s" in status(app)


async def test_no_overlapping_refreshes(make_app) -> None:
    """Refresh requests while a fetch is in flight are folded into one follow-up fetch."""
    app = make_app(view="rules")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        started = app.refresher.token
        for _ in range(5):
            app.refresh_view()
        assert app.refresher.busy and app.refresher.token == started + 1
        await settle(pilot)
        assert app.refresher.token == started + 2  # the five requests became one more fetch


async def test_export_and_screenshot_keys(make_app, tmp_path: Path) -> None:
    app = make_app(export_dir=tmp_path, view="rules")
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        csv = list(tmp_path.glob("tractatus-watch-rules-alpha-*.csv"))
        assert len(csv) == 1
        exported = pl.read_csv(csv[0])
        shown = rows_of(app, "rules-table")
        assert exported.height == len(shown)
        assert sorted(exported["rule_id"].to_list()) == sorted(r[2] for r in shown)
        assert "exported 16 rows" in screen_text(app)  # a row per arm and rule
        await pilot.press("5")
        await settle(pilot)
        await type_prompt(pilot, "colon", f"export parquet {tmp_path / 'agents.parquet'}")
        agents = pl.read_parquet(tmp_path / "agents.parquet")
        assert agents.height == len(rows_of(app, "agents-table"))
        await pilot.press("s")
        await pilot.pause()
        svg = list(tmp_path.glob("tractatus-watch-agents-*.svg"))
        assert len(svg) == 1 and "<svg" in svg[0].read_text()[:200]


async def test_theme_key(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        first = app.theme
        await pilot.press("t")
        assert app.theme != first


async def test_quit_key(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@pytest.mark.parametrize("where", ["view", "prompt", "help", "palette", "silence"])
async def test_ctrl_c_quits_with_exit_code_0(make_app, where: str) -> None:
    """ctrl+c quits (k9s, btop), from a view, from the command line and the palette's and
    silence form's inputs (where Textual would copy) and from modal screens; no "press
    ctrl+q" hint."""
    app = make_app(view="alerts" if where == "silence" else "rules")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        if where == "prompt":
            await pilot.press("colon", "r", "u")
            assert app.query_one("#prompt", Input).has_focus
        elif where == "help":
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
        elif where == "palette":
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.press("r", "u")
        elif where == "silence":
            await pilot.press("x")
            assert isinstance(app.screen, SilenceScreen)
            assert isinstance(app.screen.focused, Input)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert "Press" not in screen_text(app)
        await until(pilot, lambda: app._exit)
    assert app.return_code == 0


async def test_rules_enter_drills_into_events_and_arm_key(make_app) -> None:
    app = make_app(view="rules")
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert "arm: governed" in screen_text(app)
        rule = rows_of(app, "rules-table")[0][1]
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_view.TITLE == "Events"
        events = app.query_one("#view-events", Events)
        assert events.filters == {"arm": "governed", "verdict": None, "rule_id": rule}
        assert f"filter: arm=governed rule={rule}" in screen_text(app)
        # Every decision listed has a check of that rule: open one and look.
        assert rows_of(app, "events-table")
        detail = str(app.query_one("#event-detail", Static).render())
        assert f" {rule} " in detail


async def test_escape_leaves_a_drill_down_and_its_filter(make_app) -> None:
    app = make_app(view="rules")
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        events = app.view("view-events")
        assert isinstance(events, Events)
        await pilot.press("down", "enter")
        await settle(pilot)
        assert app.current_view.TITLE == "Events" and events.filters["rule_id"]
        drilled = len(rows_of(app, "events-table"))
        await pilot.press("escape")
        await settle(pilot)
        assert app.current_view.TITLE == "Rules"
        assert app.query_one("#rules-table", Table).cursor_row == 1  # where it was
        assert events.filters == {"arm": None, "verdict": None, "rule_id": None}
        assert events.filter_text == ""
        await pilot.press("7")  # Events again: the drill filter did not stay
        await settle(pilot)
        assert "filter:" not in str(app.query_one("#events-head", Static).render())
        assert len(rows_of(app, "events-table")) == 50 > drilled or drilled == 50
        # Leaving a drill-down by another key clears its filter too.
        await pilot.press("2", "enter")
        await settle(pilot)
        assert events.filters["rule_id"]
        await pilot.press("1")
        await settle(pilot)
        assert events.filter_text == "" and events.filters["rule_id"] is None
        # With no drill-down, esc clears the view's own filter.
        await pilot.press("2")
        await type_prompt(pilot, "slash", "STR-001")
        assert {r[2] for r in rows_of(app, "rules-table")} == {"STR-001"}
        await pilot.press("escape")
        await settle(pilot)
        assert app.current_view.TITLE == "Rules" and app.current_view.filter_text == ""
        assert len(rows_of(app, "rules-table")) == 16  # a row per arm and rule


async def test_j_k_g_G_move_the_cursor(make_app) -> None:
    app = make_app(view="rules")
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        table = app.query_one("#rules-table", Table)
        assert table.has_focus and table.cursor_row == 0
        await pilot.press("j", "j", "j")
        assert table.cursor_row == 3
        await pilot.press("k")
        assert table.cursor_row == 2
        await pilot.press("G")
        assert table.cursor_row == table.row_count - 1 == 15
        await pilot.press("g")
        assert table.cursor_row == 0
        await pilot.press("7")
        await settle(pilot)
        events = app.query_one("#events-table", Table)
        await pilot.press("j", "j")
        assert events.cursor_row == 2
        await pilot.press("n")  # an older page, then g: the newest page, top row
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert events.cursor_row == 0 and "page 1 (following" in screen_text(app)


async def test_a_click_on_a_tab_switches_the_view(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.query_one("#topbar", TabBar)
        line = bar.render().plain
        for title in ("Runs", "Events", "Rules"):
            x = line.index(f" {title}") + 2
            assert await pilot.click("#topbar", offset=(x, 0))
            await settle(pilot)
            assert app.current_view.TITLE == title
            assert app.query_one("#views", ContentSwitcher).current == f"view-{title.lower()}"
        await pilot.click("#topbar", offset=(110, 0))  # the run label: not a tab
        await settle(pilot)
        assert app.current_view.TITLE == "Rules"


async def palette_pick(pilot: Any, query: str, expected: str) -> None:
    """ctrl+p, type `query`, wait for a hit whose text starts with `expected`, take it."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*query)

    def first() -> str:
        hits = app.screen.query_one(CommandList)
        if not hits.option_count:
            return ""
        index = hits.highlighted if hits.highlighted is not None else 0
        return str(hits.get_option_at_index(index).prompt)

    await until(pilot, lambda: first().startswith(expected))
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, CommandPalette))
    await settle(pilot)


async def test_ctrl_p_palette_runs_commands_and_switches_views(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await palette_pick(pilot, "view events", "view Events (7)")
        assert app.current_view.TITLE == "Events"
        await palette_pick(pilot, "run beta", ":run beta")  # a whole command line runs
        assert app.scope.run_id == "beta" and not app.scope.follow_latest
        await palette_pick(pilot, "silence", "silence ALERT")  # arguments needed: typed
        prompt = app.query_one("#prompt", Input)
        assert prompt.display and prompt.has_focus and prompt.value == "silence "


def write_keymap(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> K.Keymap:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = K.default_path()
    assert path == tmp_path / "config" / "tractatus-watch" / "keymap.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return load_keymap()


async def test_a_keymap_file_remaps_bindings(make_app, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    keymap = write_keymap(tmp_path, '[keymap]\n"dashboard.view.rules" = "f2"\n'
                                    '"table.down" = "ctrl+n, down"\n'
                                    '"dashboard.quit" = "ctrl+q,x"\n'
                                    '"dashboard.view.events" = "#"\n', monkeypatch)
    assert keymap.keys == {"dashboard.view.rules": "f2", "table.down": "ctrl+n,down",
                           "dashboard.quit": "ctrl+q,x",
                           "dashboard.view.events": "number_sign"} and not keymap.warnings
    app = make_app(keymap=keymap)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        assert app.query_one("#topbar", TabBar).render().plain.startswith(
            " 1 Overview f2 Rules 3 Alerts")
        await pilot.press("2")  # moved away
        await settle(pilot)
        assert app.current_view.TITLE == "Overview"
        await pilot.press("f2")
        await settle(pilot)
        assert app.current_view.TITLE == "Rules"
        table = app.query_one("#rules-table", Table)
        await pilot.press("ctrl+n", "ctrl+n", "down")
        assert table.cursor_row == 3
        await pilot.press("number_sign")  # a character given as itself: "#"
        await settle(pilot)
        assert app.current_view.TITLE == "Events"
        assert " # Events" in app.query_one("#topbar", TabBar).render().plain
        await pilot.press("question_mark")
        row = next(ln for ln in help_text(app).splitlines()
                   if ln.rstrip().endswith(" dashboard.view.rules"))
        assert row.split()[0] == "f2"
        await pilot.press("escape", "x")
        await until(pilot, lambda: app._exit)
    assert app.return_code == 0


@pytest.mark.parametrize("text, warning", [
    ("[keymap\n", "not valid TOML"),
    ('[keymap]\n"dashboard.nosuch" = "f9"\n"dashboard.view.rules" = "f2"\n',
     "unknown binding id(s) dashboard.nosuch ignored"),
    ('[keymap]\n"dashboard.help" = 3\n', "dashboard.help = 3 is not a key list"),
    ('keymap = "q"\n', "[keymap] must be a table"),
])
async def test_a_bad_keymap_warns_in_one_line_and_never_crashes(
        make_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
        warning: str) -> None:
    keymap = write_keymap(tmp_path, text, monkeypatch)
    assert len(keymap.warnings) == 1 and warning in keymap.warnings[0]
    assert "\n" not in keymap.warnings[0]
    app = make_app(keymap=keymap)
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await settle(pilot)
        toasts = [n.message for n in app._notifications]
        assert len(toasts) == 1 and warning in toasts[0]
        await pilot.press("f2" if "f2" in text else "2")  # what is valid still applies
        await settle(pilot)
        assert app.current_view.TITLE == "Rules"


async def test_command_history_recalls_and_persists(make_app, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = default_history_path()
    assert path == tmp_path / "state" / "tractatus-watch" / "history"
    app = make_app(history=History(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await type_prompt(pilot, "colon", "interval 0.5")
        await type_prompt(pilot, "colon", "view 3")
        await pilot.press("colon")
        prompt = app.query_one("#prompt", Input)
        prompt.value = "draft"
        await pilot.press("up")
        assert prompt.value == "view 3"
        await pilot.press("up")
        assert prompt.value == "interval 0.5"
        await pilot.press("up")  # the oldest stays
        assert prompt.value == "interval 0.5"
        await pilot.press("down")
        assert prompt.value == "view 3"
        await pilot.press("down")
        assert prompt.value == "draft"
        await pilot.press("escape", "slash")  # the filter line has no command history
        await pilot.press("up")
        assert prompt.value == ""
    assert path.read_text() == "interval 0.5\nview 3\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    again = make_app(history=History(path))  # another run of the dashboard
    async with again.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("colon", "up")
        assert again.query_one("#prompt", Input).value == "view 3"
        await pilot.press("enter")
        await settle(pilot)
        assert again.current_view.TITLE == "Alerts"
    # Bounded, newest last, a repeated line kept once at its newest place.
    history = History(path, limit=3)
    for line in ("a", "b", "view 3", "c", "d"):
        history.add(line)
    assert History(path, limit=3).lines == ["view 3", "c", "d"]


async def test_tab_completes_commands_and_their_arguments(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        await settle(pilot)  # the run ids and silences are read when `:` opens
        prompt = app.query_one("#prompt", Input)

        async def tab(text: str) -> str:
            prompt.value = text
            prompt.cursor_position = len(text)
            await pilot.press("tab")
            return prompt.value

        assert await tab("ru") == "run "
        assert await tab("run b") == "run beta"
        assert await tab("baseline al") == "baseline alpha"
        assert await tab("view ev") == "view events"
        assert await tab("silence Cov") == "silence CoverageBelowTarget"
        assert await tab("silence CoverageBelowTarget 3") == "silence CoverageBelowTarget 30m"
        assert await tab("theme nor") == "theme nord"
        assert await tab("in") == "interval "
        # Several candidates and no longer common prefix: tab cycles through them.
        first = await tab("run ")
        await pilot.press("tab")
        second = prompt.value
        assert {first, second} <= {"run alpha", "run beta", "run latest"} and first != second
        assert prompt.has_focus  # tab completes here, it does not move the focus
        # The first candidate also shows as grey text while typing (right arrow takes it).
        prompt.value = ""
        await pilot.press(*"view ov")
        await until(pilot, lambda: "view overview" in screen_text(app))
        await pilot.press("right")
        assert prompt.value == "view overview"


async def test_a_failed_command_clears_the_prompt_and_shows_the_error(make_app) -> None:
    app = make_app(view="runs")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await type_prompt(pilot, "colon", "run nosuch")
        prompt = app.query_one("#prompt", Input)
        assert prompt.display and prompt.has_focus and prompt.value == ""
        assert "no run 'nosuch'" in prompt.placeholder
        assert app.scope.run_id == "alpha"
        await pilot.press("up")  # the failed line is in the history, to fix
        assert prompt.value == "run nosuch"
        prompt.value = "run beta"
        await pilot.press("enter")
        await settle(pilot)
        assert not prompt.display and app.scope.run_id == "beta"
        # A bad filter stays, selected: typing replaces it.
        await pilot.press("5")
        await type_prompt(pilot, "slash", "escaped>")
        assert prompt.display and prompt.value == "escaped>"
        assert prompt.selection.start == 0 and prompt.selection.end == len("escaped>")
        assert "escaped takes a number" in prompt.placeholder


async def test_runs_keys_choose_and_baseline(make_app) -> None:
    app = make_app(view="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("down", "b")
        await settle(pilot)
        assert app.scope.baseline_run == "beta"
        assert rows_of(app, "runs-table")[1][0] == "B"
        await pilot.press("enter")
        await settle(pilot)
        assert app.scope.run_id == "beta" and "run beta vs beta" in screen_text(app)
        assert rows_of(app, "runs-table")[1][0] == "●B"


async def test_agents_page_keys(make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Agents, "PAGE", 5)
    app = make_app(view="agents")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        first = rows_of(app, "agents-table")
        assert len(first) == 5 and "page 1/3" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        second = rows_of(app, "agents-table")
        assert second != first and "page 2/3" in screen_text(app)
        await pilot.press("n", "n")
        await settle(pilot)
        assert len(rows_of(app, "agents-table")) == 2 and "page 3/3" in screen_text(app)
        await pilot.press("p", "p")
        await settle(pilot)
        assert rows_of(app, "agents-table") == first


async def test_events_page_keys(make_app) -> None:
    app = make_app(view="events")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.query_one("#events-table", Table)
        first = [table.key_at(i) for i in range(50)]
        await pilot.press("n", "n")
        await settle(pilot)
        assert "page 3" in screen_text(app)
        await pilot.press("p")
        await settle(pilot)
        assert "page 2" in screen_text(app)
        await pilot.press("g")
        await settle(pilot)
        now = [table.key_at(i) for i in range(50)]
        assert now == first and "page 1 (following new data)" in screen_text(app)


def stored_silences(store: Store) -> dict[str, tuple[datetime, datetime]]:
    con = store.cursor()
    try:
        return {sid: (start, end) for sid, start, end in con.execute(
            "SELECT silence_id, starts_at, ends_at FROM silences").fetchall()}
    finally:
        con.close()


def silences_app(tui_db: Path, tmp_path: Path) -> tuple[Store, DuckDBAlertStore, Dashboard]:
    """The Alerts view on a writable copy of the store, with silences it can add and expire."""
    copy = tmp_path / "writable.duckdb"
    shutil.copy(tui_db, copy)
    store = Store.open(copy)
    alert_store = DuckDBAlertStore(store)
    app = Dashboard(store, silence_writer=alert_store.add_silence,
                    silence_expirer=alert_store.expire_silence, clock=lambda: FIXED_NOW,
                    export_dir=tmp_path, view="alerts")
    return store, alert_store, app


async def test_expire_a_silence_by_key_and_by_command(tui_db: Path, tmp_path: Path) -> None:
    store, alert_store, app = silences_app(tui_db, tmp_path)
    now = datetime.fromtimestamp(FIXED_NOW, timezone.utc).replace(tzinfo=None)
    try:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            await type_prompt(pilot, "colon", "silence CoverageBelowTarget 2h fix deploying")
            await type_prompt(pilot, "colon", "silence BlockRateDrift 30m under review")
            assert [r[0] for r in rows_of(app, "alerts-table")] == [
                "firing (silenced)", "pending (silenced)"]
            assert len(rows_of(app, "silences-table")) == 2
            ids = {r[2]: r[4] for r in rows_of(app, "silences-table")}
            cov, drift = ids["fix deploying"], ids["under review"]

            # d on the selected (silenced) alert: asks first; n keeps the silence.
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)
            assert cov in screen_text(app) and 'alertname="CoverageBelowTarget"' in \
                screen_text(app)
            await pilot.press("n")
            await settle(pilot)
            assert len(rows_of(app, "silences-table")) == 2
            await pilot.press("d")
            await pilot.press("y")
            await settle(pilot)
            assert "expired silence" in screen_text(app)
            assert [r[4] for r in rows_of(app, "silences-table")] == [drift]
            assert rows_of(app, "alerts-table")[0][0] == "firing"

            # :unsilence by the start of the id (completed like the others).
            await type_prompt(pilot, "colon", f"unsilence {drift[:-2]}")
            assert not app.query_one("#silences-table").display
            assert "no active silences" in screen_text(app)
            assert [r[0] for r in rows_of(app, "alerts-table")] == ["firing", "pending"]
            await type_prompt(pilot, "colon", "unsilence nosuch")
            assert "no active silence 'nosuch'" in screen_text(app)
    finally:
        rows = stored_silences(store)
        active = alert_store.silences(FIXED_NOW)
        store.close()
    # Both rows kept, each ended now: nothing silences the alerts any more.
    assert rows[cov][1] == now and rows[drift][1] == now
    assert rows[cov][0] == now and len(rows) == 2 and active == []


async def test_expire_from_the_silences_table(tui_db: Path, tmp_path: Path) -> None:
    store, alert_store, app = silences_app(tui_db, tmp_path)
    try:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            await type_prompt(pilot, "colon", "silence CoverageBelowTarget 2h a")
            await type_prompt(pilot, "colon", "silence BlockRateDrift 2h b")
            silences = app.query_one("#silences-table", Table)
            silences.focus()
            await pilot.press("j")  # the second row
            second = silences.cursor_key
            await pilot.press("d", "enter")
            await settle(pilot)
            assert [r[4] for r in rows_of(app, "silences-table")] != [second]
            assert second not in [r[4] for r in rows_of(app, "silences-table")]
            assert len(rows_of(app, "silences-table")) == 1
    finally:
        active = [s.silence_id for s in alert_store.silences(FIXED_NOW)]
        store.close()
    assert len(active) == 1 and second not in active


async def test_expire_on_a_read_only_database_says_why(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await type_prompt(pilot, "colon", "unsilence abc")
        assert "silences cannot be changed here" in app.query_one("#prompt", Input).placeholder


async def test_silence_on_a_read_only_database_says_why(make_app) -> None:
    app = make_app(view="alerts")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("x")
        assert isinstance(app.screen, SilenceScreen)
        await pilot.press("enter", "enter")
        await settle(pilot)
        assert "silences cannot be saved here" in screen_text(app)


async def test_silence_key_writes_through_the_alert_store(tui_db: Path, tmp_path: Path) -> None:
    from tractatus_watch.storage.alert_store import DuckDBAlertStore

    copy = tmp_path / "writable.duckdb"
    shutil.copy(tui_db, copy)
    store = Store.open(copy)
    alert_store = DuckDBAlertStore(store)
    app = Dashboard(store, silence_writer=alert_store.add_silence, clock=lambda: FIXED_NOW,
                    export_dir=tmp_path, view="alerts")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("x")
        assert isinstance(app.screen, SilenceScreen)
        app.screen.query_one("#silence-duration", Input).value = "2h"
        await pilot.press("enter")
        app.screen.query_one("#silence-comment", Input).value = "known: coverage fix deploying"
        await pilot.press("enter")
        await settle(pilot)
        assert "silenced CoverageBelowTarget" in screen_text(app)
        silences = rows_of(app, "silences-table")
        assert len(silences) == 1 and "known: coverage fix deploying" in silences[0][2]
        assert rows_of(app, "alerts-table")[0][0] == "firing (silenced)"
        # The same through the command line, by alert name.
        await type_prompt(pilot, "colon", "silence BlockRateDrift 30m drift under review")
        assert len(rows_of(app, "silences-table")) == 2
    rows = store.cursor().execute("SELECT matchers, comment, epoch(ends_at - starts_at) "
                                  "FROM silences ORDER BY comment").fetchall()
    store.close()
    assert rows[0][1] == "drift under review" and rows[0][2] == 1800
    assert json.loads(rows[1][0]) == ['alertname="CoverageBelowTarget"', 'arm="governed"']
    assert rows[1][2] == 7200
